"""The pumps of one utterance, between the caller, the frontend and the decoder (``pipeline.Pipeline.run`` wires
them): the caller's text into the frontend's Normalize stream, the frontend's segments into the Decode stream, and
the decoder's audio out to the caller, resampled and encoded."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np

from shared.aio import END
from shared.audio import AudioEncoder, float32_from_bytes
from shared.errors import from_rpc_error
from tts.frontend.v1 import frontend_pb2
from tts.v1 import tts_pb2

FLUSH = object()     # a text piece that asks the frontend to cut a segment at what it has now


async def text_to_frontend(pieces, queue: asyncio.Queue, summary) -> None:
    """``pieces`` (str or FLUSH) → NormalizeRequests on ``queue``, then END; ``summary`` (a SummaryBuilder) learns
    when the first piece came."""
    try:
        async for piece in pieces:
            summary.text_arrived()
            if piece is FLUSH:
                await queue.put(frontend_pb2.NormalizeRequest(flush=True))
            else:
                await queue.put(frontend_pb2.NormalizeRequest(text=piece))
    finally:
        await queue.put(END)


async def segments_to_decoder(fe_call, decoder, segments: dict, on_segment, ready: asyncio.Event,
                              summary=None) -> None:
    """Each segment of the Normalize call ``fe_call`` → ``segments`` (by index), ``on_segment`` (if given) and the
    DecoderCall ``decoder``'s feed; ``ready`` is set at the first segment and at the end; ``summary`` (a
    SummaryBuilder) learns when the first segment was cut."""
    try:
        async for resp in fe_call:
            if summary is not None:
                summary.segment_ready()
            segments[resp.segment.index] = resp.segment
            if on_segment is not None:
                on_segment(resp.segment)
            await decoder.put(resp.segment)
            ready.set()
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error("frontend", err) from None
    finally:
        await decoder.end()
        ready.set()


class AudioOut:
    """The decoder's audio chunks → the caller's StreamingSynthesizeResponses in the plan's rate and encoding, with
    their offsets and the span and text of the segment they speak (``segments``: the frontend's, by index)."""

    def __init__(self, plan, segments: dict):
        self.plan = plan
        self.segments = segments
        self.encoder: AudioEncoder | None = None
        self.samples = 0                    # sent so far, at the plan's rate
        self.last_segment = None

    def chunk(self, chunk) -> tuple[tts_pb2.StreamingSynthesizeResponse | None, int]:
        """One decoder AudioChunk → (the response to send, or None while the encoder holds it all; its samples)."""
        if self.encoder is None:
            self.encoder = AudioEncoder(chunk.sample_rate, self.plan.sample_rate, self.plan.encoding)
        data, n = self.encoder.encode(float32_from_bytes(chunk.pcm))
        self.last_segment = self.segments.get(chunk.segment_index)
        if n == 0 and not data:
            return None, 0
        return self._response(data, n, chunk.segment_index, self.last_segment, chunk.segment_end), n

    def tail(self) -> tts_pb2.StreamingSynthesizeResponse | None:
        """After the last chunk: the resampler's tail and what a codec still held (last frames, last page)."""
        if self.encoder is None:
            return None
        data, n = self.encoder.encode(np.zeros(0, np.float32), last=True)
        if not (n or data):
            return None
        idx = self.last_segment.index if self.last_segment is not None else 0
        return self._response(data, n, idx, self.last_segment, True)

    def _response(self, data: bytes, n: int, index: int, seg, segment_end: bool):
        plan, offset = self.plan, self.samples
        self.samples += n
        span = tts_pb2.TextSpan(start=seg.span.start, end=seg.span.end) if seg is not None else None
        return tts_pb2.StreamingSynthesizeResponse(audio=tts_pb2.AudioChunk(
            audio=data, sample_rate=plan.sample_rate, encoding=tts_pb2.AudioEncoding.Value(plan.encoding),
            offset_ms=offset * 1000 / plan.sample_rate, duration_ms=n * 1000 / plan.sample_rate,
            segment_index=index, span=span, segment_text=seg.text if seg is not None else "",
            segment_end=segment_end))

"""The pumps of one utterance, between the caller, the frontend and the decoder (``pipeline.Pipeline.run`` wires
them): the caller's text into the frontend's Normalize stream, the frontend's segments into the Decode stream, and
the decoder's audio out to the caller, resampled and encoded."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np

from shared.audio import AudioEncoder, float32_from_bytes
from shared.errors import from_rpc_error
from tts.v1 import tts_pb2

FLUSH = object()     # a text piece that asks the frontend to cut a segment at what it has now


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
    their offsets in the stream's timeline, the span and text of the segment they speak, and (``plan.alignment``) the
    characters whose sound starts in them. One per stream; each reply (``replies.Reply``) gives its segments, its
    place in the stream's text and its alignment."""

    def __init__(self, plan):
        self.plan = plan
        self.encoder: AudioEncoder | None = None
        self.samples = 0                    # sent so far, at the plan's rate
        self.last: tuple | None = None      # (reply, segment) of the last chunk
        self._held: list = []               # alignment of chunks the encoder held whole (goes with the next one)
        self._held_estimated = False

    @property
    def sent_ms(self) -> float:
        return self.samples * 1000 / self.plan.sample_rate

    def chunk(self, chunk, reply) -> tuple[tts_pb2.StreamingSynthesizeResponse | None, int]:
        """One decoder AudioChunk of ``reply`` → (the response to send, or None while the encoder holds it all; its
        samples)."""
        if self.encoder is None:
            self.encoder = AudioEncoder(chunk.sample_rate, self.plan.sample_rate, self.plan.encoding)
        entries = reply.align(chunk)
        data, n = self.encoder.encode(float32_from_bytes(chunk.pcm))
        seg = reply.segments.get(chunk.segment_index)
        self.last = (reply, seg)
        if self.plan.alignment:
            self._held += entries
            self._held_estimated |= chunk.alignment_estimated
        if n == 0 and not data:
            return None, 0
        return self._response(data, n, reply, seg, chunk.segment_end), n

    def restart(self) -> None:
        """A reply was cut: what the resampler and the codec still hold of it is dropped (never sent), so none of
        it reaches the next reply's chunks. Raw encodings go on in the same stream (a WAV header is sent once);
        a container encoding starts a new file with the next reply (its headers first)."""
        if self.encoder is not None:
            self.encoder.restart()
        self._held, self._held_estimated = [], False

    def tail(self) -> tts_pb2.StreamingSynthesizeResponse | None:
        """After the last chunk: the resampler's tail and what a codec still held (last frames, last page)."""
        if self.encoder is None or self.last is None:
            return None
        data, n = self.encoder.encode(np.zeros(0, np.float32), last=True)
        if not (n or data or self._held):
            return None
        reply, seg = self.last
        return self._response(data, n, reply, seg, True)

    def _response(self, data: bytes, n: int, reply, seg, segment_end: bool):
        plan, offset = self.plan, self.samples
        self.samples += n
        reply.sent_samples += n
        span = (tts_pb2.TextSpan(start=seg.span.start + reply.text_base, end=seg.span.end + reply.text_base)
                if seg is not None else None)
        alignment = [tts_pb2.CharAlignment(span=tts_pb2.TextSpan(start=e.start, end=e.end), start_ms=e.start_ms,
                                           end_ms=e.end_ms, silent=e.silent) for e in self._held]
        estimated, self._held, self._held_estimated = self._held_estimated, [], False
        return tts_pb2.StreamingSynthesizeResponse(audio=tts_pb2.AudioChunk(
            audio=data, sample_rate=plan.sample_rate, encoding=tts_pb2.AudioEncoding.Value(plan.encoding),
            offset_ms=offset * 1000 / plan.sample_rate, duration_ms=n * 1000 / plan.sample_rate,
            segment_index=(seg.index if seg is not None else 0) + reply.segment_base, span=span,
            segment_text=seg.text if seg is not None else "", segment_end=segment_end, alignment=alignment,
            alignment_estimated=estimated, reply=reply.index))

"""Replies of a stream, and barge-in.

A ``Reply`` is the text between two accepted Cancels (the whole stream when it is never cancelled): its own
Normalize and Decode calls, its text, its segments and the alignment of its audio. ``BargeIn`` runs a
StreamingSynthesize stream as a sequence of replies on one plan (voice, config and decoder resolved once): a Cancel
cuts the current reply at once (its calls are cancelled, none of its audio is sent after the Cancel was read, the
codec's held audio of it is dropped), answers with an ``Interruption`` (what the caller heard, by its played
position), and text after it is the next reply, continuing the stream's text and audio timelines.
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from shared.aio import END, abandon, drain, race
from shared.errors import InvalidArgument
from tts.frontend.v1 import frontend_pb2
from tts.v1 import tts_pb2

from .alignment import Entry, SegmentAligner, heard_end, source_groups
from .decoder_call import DecoderCall
from .pumps import FLUSH, AudioOut, segments_to_decoder

NOTHING_SPEAKABLE = ("nothing in it can be spoken: the voices read Chinese and English; other scripts, emoji and "
                     "symbols are skipped")
PLAYED_SLACK_MS = 1e-3        # played_ms may pass the audio sent by this much (sums of floats)


@dataclass
class CancelRequest:
    """A client's Cancel, as read from the stream (validated against the stream's state when applied)."""

    played_ms: float


class Reply:
    """One reply: ``start()`` opens its Normalize call (the Decode call opens once a segment is ready), ``put`` its
    text, ``end_text()`` at its end, iterate ``responses()`` once, ``close()`` cancels whatever still runs."""

    def __init__(self, stages, plan, settings, timeout, summary, *, index: int = 0, text_base: int = 0,
                 segment_base: int = 0, base_ms: float = 0.0, decoder_stub=None, on_segment=None):
        self.stages, self.plan, self.settings, self.timeout, self.summary = stages, plan, settings, timeout, summary
        self.index = index
        self.text_base = text_base          # characters of the stream's text before this reply
        self.segment_base = segment_base    # segments of the stream before this reply
        self.base_ms = base_ms              # where this reply's audio starts in the stream's timeline
        self.on_segment = on_segment
        self.pieces: list[str] = []
        self.chars = 0
        self.segments: dict[int, frontend_pb2.Segment] = {}
        self.entries: list[Entry] = []      # the alignment of its audio so far (what was heard is read from it)
        self._aligners: dict[int, SegmentAligner] = {}
        self.sent_samples = 0
        self.cut = False
        self.fe_q: asyncio.Queue = asyncio.Queue(maxsize=settings.stage_queue)
        self.ready = asyncio.Event()
        self.decoder = DecoderCall(stages, plan, timeout, settings.stage_queue, stub=decoder_stub)
        self.fe_call = None
        self.helpers: list[asyncio.Task] = []

    # ---- text in ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        normalize_config = frontend_pb2.NormalizeConfig()
        normalize_config.CopyFrom(self.plan.normalize_config)
        normalize_config.decoder_rtf = self.decoder.rtf
        self.fe_q.put_nowait(frontend_pb2.NormalizeRequest(config=normalize_config))
        self.fe_call = self.stages.frontend.Normalize(drain(self.fe_q), metadata=self.plan.metadata,
                                                      timeout=self.timeout())
        self.helpers.append(asyncio.get_running_loop().create_task(segments_to_decoder(
            self.fe_call, self.decoder, self.segments, self.on_segment, self.ready, self.summary)))

    async def put(self, piece) -> None:
        """A text piece (str) or FLUSH."""
        self.summary.text_arrived()
        if piece is FLUSH:
            await self.fe_q.put(frontend_pb2.NormalizeRequest(flush=True))
        else:
            self.pieces.append(piece)
            self.chars += len(piece)
            await self.fe_q.put(frontend_pb2.NormalizeRequest(text=piece))

    async def end_text(self) -> None:
        await self.fe_q.put(END)

    @property
    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    # ---- audio out ----------------------------------------------------------------------------------------------
    async def responses(self, *watch: asyncio.Task):
        """The decoder's responses once a segment is ready (nothing when the text had nothing to speak). A failing
        helper (frontend, decoder feed) or task in ``watch`` ends it with that error."""
        async for _ in race(_when(self.ready), *self.helpers, *watch):
            pass
        if not self.segments:
            for task in (*self.helpers, *watch):
                await task
            return
        async for resp in race(self.decoder.responses(), *self.helpers, *watch):
            yield resp
        for task in self.helpers:
            await task

    def align(self, chunk) -> list[Entry]:
        """A decoder chunk's timings → the caller's entries complete now (stream frames); kept for ``heard`` (they
        go on the caller's chunks only when it asked: ``AudioOut``)."""
        seg = self.segments.get(chunk.segment_index)
        if seg is None:
            return []
        aligner = self._aligners.get(chunk.segment_index)
        rate = chunk.sample_rate

        def to_ms(sample: int) -> float:
            return self.base_ms + sample * 1000 / rate

        if aligner is None:
            text = self.text
            groups = source_groups(seg.normalized, seg.source_map, text[seg.span.start:seg.span.end], seg.span.start)
            for g in groups:
                g.s_start += self.text_base
                g.s_end += self.text_base
            aligner = self._aligners[chunk.segment_index] = SegmentAligner(
                (seg.span.start + self.text_base, seg.span.end + self.text_base), groups, to_ms)
            aligner.first_ms = to_ms(chunk.offset_samples)
        entries = aligner.add(chunk.alignment)
        if chunk.segment_end:
            end_ms = to_ms(chunk.offset_samples + chunk.num_samples)
            if aligner.timed:
                entries += aligner.end(end_ms)
            else:       # the engine gave no alignment: what was heard is known by whole segments only
                self.entries.append(Entry(aligner.span[0], aligner.span[1], aligner.first_ms, end_ms))
            del self._aligners[chunk.segment_index]
        self.entries += entries
        return entries

    def heard(self, played_ms: float) -> int:
        """How many characters of this reply the caller heard by ``played_ms`` (its sound ended by then)."""
        return heard_end(self.entries, played_ms, self.text_base) - self.text_base

    @property
    def segment_count(self) -> int:
        return max(self.segments) + 1 if self.segments else 0

    def close(self) -> None:
        self.decoder.close()
        abandon(*self.helpers)
        if self.fe_call is not None:
            self.fe_call.cancel()


async def _when(event: asyncio.Event):
    await event.wait()
    yield None


@dataclass
class _Stats:
    replies: int = 0
    interruptions: int = 0
    played_ms: float = 0.0
    heard_chars: int = 0

    def count(self, reply: Reply, sent_ms: float, played_ms: float | None = None, heard: int | None = None) -> None:
        """A reply is over: cut at ``played_ms`` with ``heard`` characters heard, or (None) played whole."""
        if not reply.chars:
            return
        self.replies += 1
        if played_ms is None:
            self.played_ms += sent_ms
            self.heard_chars += reply.chars
        else:
            self.interruptions += 1
            self.played_ms += min(max(played_ms - reply.base_ms, 0.0), sent_ms)
            self.heard_chars += heard


class BargeIn:
    """One StreamingSynthesize stream as replies (see the module docstring). ``messages``: the client's validated
    messages after the config (str, FLUSH, CancelRequest); iterate ``run()`` for the responses."""

    def __init__(self, stages, plan, settings, timeout, summary, messages):
        self.stages, self.plan, self.settings, self.timeout, self.summary = stages, plan, settings, timeout, summary
        self.messages = messages
        self.out = AudioOut(plan)
        self.stats = _Stats()
        self.events: asyncio.Queue = asyncio.Queue()    # (response, next reply or None) from the reader
        self.reply = Reply(stages, plan, settings, timeout, summary)     # started by run() once admitted

    def _new_reply(self, prev: Reply) -> Reply:
        """The reply after a cut: same plan, on the same decoder (it holds the voice's prompt), continuing the
        stream's text and audio timelines. No admission probe: the stream already had its place; the Decode call's
        own admission applies (and moves it to another decoder as before)."""
        reply = Reply(self.stages, self.plan, self.settings, self.timeout, self.summary, index=prev.index + 1,
                      text_base=prev.text_base + prev.chars, segment_base=prev.segment_base + prev.segment_count,
                      base_ms=self.out.sent_ms, decoder_stub=prev.decoder.stub)
        reply.start()
        return reply

    # ---- the client's side ------------------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            async for msg in self.messages:
                if isinstance(msg, CancelRequest):
                    self._cancel(msg.played_ms)
                else:
                    await self.reply.put(msg)
        finally:
            await self.reply.end_text()

    def _reject(self, field: str, message: str) -> None:
        self.events.put_nowait((tts_pb2.StreamingSynthesizeResponse(rejected=tts_pb2.Rejected(
            code=3, field=field, message=f"{field}: {message}")), None))

    def _cancel(self, played_ms: float) -> None:
        """Cut the current reply now (synchronously: no chunk of it is sent after this), or reject the Cancel."""
        reply, sent_ms = self.reply, self.out.sent_ms
        if not math.isfinite(played_ms) or played_ms < 0:
            return self._reject("cancel.played_ms", f"{played_ms!r} is not a position: use 0 .. {sent_ms:.3f} "
                                "(ms of the stream's audio played)")
        if played_ms > sent_ms + PLAYED_SLACK_MS:
            return self._reject("cancel.played_ms", f"{played_ms:.3f} ms is past the audio sent ({sent_ms:.3f} ms)")
        if not reply.chars:
            return self._reject("cancel", "nothing to cancel: no text was sent since "
                                + ("the last cancel" if reply.index else "the config"))
        reply.cut = True
        reply.close()                         # its Normalize and Decode calls are cancelled now
        self.out.restart()                    # what the codec held of it is never sent
        self.summary.playback.stop()
        heard = max(0, min(reply.heard(played_ms), reply.chars))
        text = reply.text
        reply_sent_ms = sent_ms - reply.base_ms
        self.stats.count(reply, reply_sent_ms, played_ms, heard)
        interruption = tts_pb2.Interruption(
            reply=reply.index, played_ms=played_ms, sent_ms=sent_ms, heard_text=text[:heard],
            unspoken_text=text[heard:], reply_start_ms=reply.base_ms, reply_sent_ms=reply_sent_ms)
        if heard:
            interruption.heard_span.CopyFrom(tts_pb2.TextSpan(start=reply.text_base, end=reply.text_base + heard))
        self.reply = self._new_reply(reply)
        self.events.put_nowait((tts_pb2.StreamingSynthesizeResponse(interrupted=interruption), self.reply))

    # ---- the responses ------------------------------------------------------------------------------------------
    async def run(self):
        loop = asyncio.get_running_loop()
        reader = None
        current = self.reply
        try:
            await current.decoder.admit()    # a caller no decoder would admit now is refused at once
            current.start()
            reader = loop.create_task(self._read())
            responses = current.responses(reader).__aiter__()
            nxt = asyncio.ensure_future(responses.__anext__())
            event = asyncio.ensure_future(self.events.get())
            while True:
                await asyncio.wait({nxt, event}, return_when=asyncio.FIRST_COMPLETED)
                if event.done():
                    resp, following = event.result()
                    event = asyncio.ensure_future(self.events.get())
                    if following is not None:           # the current reply was cut: go on with the next
                        abandon(nxt)
                        current = following
                        responses = current.responses(reader).__aiter__()
                        nxt = asyncio.ensure_future(responses.__anext__())
                    yield resp
                    continue
                try:
                    resp = nxt.result()
                except StopAsyncIteration:
                    break
                nxt = asyncio.ensure_future(responses.__anext__())
                if current.cut:
                    continue
                if resp.WhichOneof("response") == "summary":
                    self.summary.decoder = resp.summary
                    continue
                sent, n = self.out.chunk(resp.chunk, current)
                if sent is not None:
                    self.summary.audio_sent(n)
                    yield sent
            abandon(event)
            await reader
            while not self.events.empty():             # rejections of the last messages
                yield self.events.get_nowait()[0]
            tail = self.out.tail()
            if tail is not None:
                yield tail
            if self.out.samples == 0 and not self.stats.interruptions:
                raise InvalidArgument("text", NOTHING_SPEAKABLE)
            self.stats.count(current, current.sent_samples * 1000 / self.plan.sample_rate)
            summary = self.summary.build(self.out.samples, current.segment_base + current.segment_count)
            summary.replies, summary.interruptions = self.stats.replies, self.stats.interruptions
            summary.played_ms, summary.heard_chars = self.stats.played_ms, self.stats.heard_chars
            yield tts_pb2.StreamingSynthesizeResponse(summary=summary)
        finally:
            abandon(reader)
            self.reply.close()
            if current is not self.reply:
                current.close()

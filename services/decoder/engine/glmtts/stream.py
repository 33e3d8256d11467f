"""One glmtts stream as its reader sees it: segments in (as LM text ids, to the scheduler), audio chunks out.

The engine (engine.py) owns the threads; they reach a stream only through :meth:`GLMTTSStream.deliver` and
:meth:`GLMTTSStream.fail_now`, which hand the item to the stream's event loop.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import ChunkQueue, SegmentInput, Stream, Voice
from .lm_text import lm_text, official_form
from .scheduler import Segment, StreamState
from .acoustic import SAMPLE_RATE
from .timing import SegmentTimer

if TYPE_CHECKING:
    from .engine import GLMTTSEngine

END = object()                  # the last item of a stream's queue: the stream has ended


class GLMTTSStream(Stream):
    def __init__(self, engine: "GLMTTSEngine", state: StreamState, voice: Voice, loop):
        self.engine = engine
        self.state = state
        # the voice this stream speaks, as the summary reports it: a reference id for a cloned voice
        self.voice_name = f"ref:{voice.reference_id}" if voice.reference_id else (voice.name or "default")
        self.conditioning = ""                         # digest of what conditioned the flow (set by the acoustic side)
        self.loop = loop
        self.queue = ChunkQueue()
        self.renderers: dict[int, object] = {}         # segment index → SegmentRenderer (acoustic thread only)
        self.blocks: list[int] = []                      # flow block sizes (tokens) of streamed segments
        self.offline = False                             # segments rendered whole (full attention)
        self.alignment = False                           # estimate character times (StreamOptions.alignment)
        self.timers: dict[int, SegmentTimer] = {}        # segment index → its estimate (acoustic thread reads it)
        self._closed = False
        self._error: BaseException | None = None

    def feed(self, segment: SegmentInput) -> None:
        text = segment.normalized.strip() or segment.text.strip()
        if not text or not any(c.isalnum() for c in text):
            return                  # nothing to say (a lone mark): the LM would be asked to speak an end mark
        text = lm_text(segment.normalized, segment.words, phonemes=self.engine.phoneme_tokens) \
            if segment.normalized.strip() else official_form(segment.text)
        ids = self.engine.lm.encode_text(text)
        if self.alignment:
            self.timers[segment.index] = SegmentTimer(segment, SAMPLE_RATE)
        self.engine.scheduler.feed(self.state, Segment(index=segment.index, text_ids=ids))

    def end(self) -> None:
        self.engine.scheduler.end(self.state)

    async def chunks(self):
        while True:
            if self._error is not None:
                raise self._error
            item = await self.queue.get()
            if self._error is not None:          # a dead engine overtakes whatever was queued
                raise self._error
            if item is END:
                return
            if isinstance(item, BaseException):
                raise item
            self.engine.scheduler.consumed(self.state)
            if len(item.audio) or item.segment_end:
                yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.engine.scheduler.remove(self.state)
        self.engine.acoustic_drop(self)
        self.engine._release(self)

    # -- called from worker threads -------------------------------------------------------------------------------

    def deliver(self, item) -> None:
        if not self._closed:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            except RuntimeError:          # loop closed: the stream is gone
                pass

    def fail_now(self, exc: BaseException) -> None:
        """Fail the stream ahead of any audio still queued (the engine died)."""
        def fail():
            self._error = exc
            self.queue.put_nowait(exc)
        if not self._closed:
            try:
                self.loop.call_soon_threadsafe(fail)
            except RuntimeError:
                pass

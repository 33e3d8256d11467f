"""Continuous batching of speech-token decoding: one scheduler thread per pod steps every active stream together.

Each stream owns a :class:`~.kv_cache.StreamKV` (its block table in the pod's paged KV pool) for its whole life.
A pass of the scheduler:
  1. picks the runnable streams: those starting a segment (a prefill of whatever the cache does not hold yet — the
     longest common prefix with what it holds is kept, so segment 2 reuses segment 1's context) and those in the
     middle of a segment (one token each); a stream whose reader is too far behind is skipped (back-pressure);
  2. runs ONE packed forward over all of them (``SpeechLM.packed_forward``: one attention call per layer for all
     of them), or, for streams opened with
     ``use_cache=False``, a full forward over their whole sequence;
  3. samples a token per stream and, every chunk boundary, hands the tokens so far to the acoustic worker.
New streams join between passes; a finished, cancelled or expired stream leaves and its blocks go back to the pool
at once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from shared.errors import InvalidArgument

from .lm import SamplingParams, SpeechLM, StreamKV

log = logging.getLogger("decoder.glmtts")

TOKEN_RATE = 25          # speech tokens per second of audio


@dataclass
class Prompt:
    """What a voice contributes: LM prefix (prompt text ids + prompt speech tokens) and acoustic conditioning."""

    text_ids: list[int]
    speech_tokens: list[int]                 # 0..32767
    feat: torch.Tensor | None                # [1, frames, 80] prompt mel (24 kHz), or None
    embedding: torch.Tensor                  # [1, 192]


@dataclass
class Segment:
    index: int
    text_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    min_len: int = 0
    max_len: int = 0
    boundaries: list[int] = field(default_factory=list)   # token counts at which audio chunks are due
    next_boundary: int = 0                                 # index into boundaries


class StreamState:
    """Everything the scheduler keeps for one stream. Mutated only under the scheduler's lock or by its thread."""

    def __init__(self, sid: int, prompt_source, schedule: list[int], params: SamplingParams, seed: int,
                 use_cache: bool, sink, max_ahead: int):
        self.id = sid
        self.prompt_source = prompt_source       # callable → Prompt, run lazily on the scheduler thread
        self.prompt: Prompt | None = None
        self.schedule = schedule
        self.params = params
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.use_cache = use_cache
        self.sink = sink                         # acoustic side: sink.chunk(state, seg_index, tokens, final, max_len), sink.end(state), sink.fail(state, exc)
        self.max_ahead = max_ahead
        self.pending: deque[Segment] = deque()
        self.current: Segment | None = None
        self.history: list[Segment] = []         # finished segments (context for the next ones)
        self.reused_tokens = 0                   # context ids found in the cache instead of recomputed
        self.kv: StreamKV | None = None
        self.cached_ids: list[int] = []          # the ids whose K/V ``kv`` holds (or, without cache, the sequence)
        self.next_ids: list[int] = []            # ids to feed on the next pass
        self.ended = False
        self.closed = False
        self.done = False
        self.ahead = 0                           # chunks handed to the acoustic side and not yet read
        self.last_active = time.monotonic()
        self.tokens_total = 0
        self.stream = None                       # the engine's stream object (for the acoustic side)

    def runnable(self) -> bool:
        if self.closed or self.done or self.ahead >= self.max_ahead:
            return False
        return self.current is not None or bool(self.pending)


class Scheduler:
    def __init__(self, lm: SpeechLM, *, max_prefill_tokens: int = 1024, max_history_tokens: int = 750,
                 max_tokens_per_stream: int = 4096, min_ratio: float = 2.0, max_ratio: float = 20.0,
                 idle_ttl_s: float = 60.0):
        self.lm = lm
        self.max_prefill_tokens = max_prefill_tokens
        self.max_history_tokens = max_history_tokens
        self.max_tokens_per_stream = max_tokens_per_stream
        self.min_ratio, self.max_ratio = min_ratio, max_ratio
        self.idle_ttl_s = idle_ttl_s
        self._cv = threading.Condition()
        self._streams: dict[int, StreamState] = {}
        self._busy: set[int] = set()             # streams inside the pass running now
        self._thread: threading.Thread | None = None
        self._stop = False
        self.steps = 0

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="glmtts-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=10)
        with self._cv:
            for st in list(self._streams.values()):
                self._free(st)
            self._streams.clear()

    # -- called from the event loop -----------------------------------------------------------------------------

    def add(self, st: StreamState) -> None:
        with self._cv:
            self._streams[st.id] = st
            self._cv.notify_all()

    def feed(self, st: StreamState, seg: Segment) -> None:
        with self._cv:
            st.pending.append(seg)
            st.last_active = time.monotonic()
            self._cv.notify_all()

    def end(self, st: StreamState) -> None:
        with self._cv:
            st.ended = True
            self._cv.notify_all()
        self._maybe_finish(st)

    def consumed(self, st: StreamState) -> None:
        """The reader took a chunk: the stream may run again."""
        with self._cv:
            st.ahead = max(0, st.ahead - 1)
            st.last_active = time.monotonic()
            self._cv.notify_all()

    def remove(self, st: StreamState) -> None:
        """Abort and forget a stream; its cache is freed now, or right after the pass using it."""
        with self._cv:
            st.closed = True
            self._streams.pop(st.id, None)
            if st.id not in self._busy:
                self._free(st)
            self._cv.notify_all()

    def clear_idle(self) -> tuple[int, int]:
        """Free the caches of streams that are not decoding now; they recompute their context when text arrives."""
        freed = n = 0
        with self._cv:
            for st in self._streams.values():
                if st.id in self._busy or st.current is not None or st.pending or st.kv is None:
                    continue
                freed += st.kv.nbytes
                n += 1
                self._free(st)
        return freed, n

    def cache_bytes(self) -> int:
        with self._cv:
            return sum(st.kv.nbytes for st in self._streams.values() if st.kv is not None)

    def active(self) -> int:
        with self._cv:
            return len(self._streams)

    # -- the loop -----------------------------------------------------------------------------------------------

    def _free(self, st: StreamState) -> None:
        if st.kv is not None:
            st.kv.free()
            st.kv = None
        st.cached_ids = []

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for st in self._streams.values():
            if (st.kv is not None and st.current is None and not st.pending and st.id not in self._busy
                    and now - st.last_active > self.idle_ttl_s):
                log.info("stream state expired", extra={"stream": st.id, "freed_bytes": st.kv.nbytes})
                self._free(st)

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                while not self._stop:
                    batch = [st for st in self._streams.values() if st.runnable()]
                    if batch:
                        break
                    self._expire_idle()
                    self._cv.wait(timeout=min(1.0, self.idle_ttl_s))
                if self._stop:
                    return
                self._busy = {st.id for st in batch}
            try:
                self._pass(batch)
            except Exception as exc:  # a bug or a device error: fail these streams, keep serving the others
                log.exception("decoding pass failed")
                for st in batch:
                    st.done = True
                    st.sink.fail(st, exc)
            finally:
                with self._cv:
                    self._busy = set()
                    for st in batch:
                        if st.closed:
                            self._free(st)
                    self._cv.notify_all()
            for st in batch:
                self._maybe_finish(st)

    def _maybe_finish(self, st: StreamState) -> None:
        with self._cv:
            if st.done or st.closed or not st.ended or st.current is not None or st.pending or st.id in self._busy:
                return
            st.done = True
        st.sink.end(st)

    # -- one pass -----------------------------------------------------------------------------------------------

    def _pass(self, batch: list[StreamState]) -> None:
        cached, uncached = [], []
        prefill_budget = self.max_prefill_tokens
        for st in batch:
            if st.current is None:
                if prefill_budget <= 0:
                    continue                       # start it on a later pass; keep this pass short for the others
                try:
                    self._start_segment(st)
                except Exception as exc:  # this stream's voice or text is unusable: fail it alone
                    st.done = True
                    st.sink.fail(st, exc)
                    continue
                prefill_budget -= len(st.next_ids)
            (cached if st.use_cache else uncached).append(st)
        logits = []
        if cached:   # one device→host copy per pass; sampling runs on the CPU with each stream's own generator
            logits += list(self.lm.packed_forward([(st.kv, st.next_ids) for st in cached]).cpu())
        for st in uncached:
            st.cached_ids.extend(st.next_ids)
            logits.append(self.lm.full_forward(st.cached_ids).cpu())
        self.steps += 1
        for st, row in zip(cached + uncached, logits):
            if st.use_cache:
                st.cached_ids.extend(st.next_ids)
            self._advance(st, row)

    def _start_segment(self, st: StreamState) -> None:
        if st.prompt is None:
            st.prompt = st.prompt_source()
        with self._cv:
            seg = st.pending.popleft()
        st.current = seg
        n_text = max(1, len(seg.text_ids))
        seg.min_len = int(n_text * self.min_ratio)
        seg.max_len = int(n_text * self.max_ratio)
        ids = self._segment_input(st, seg)
        room = self.max_tokens_per_stream - len(ids)
        if room < max(seg.min_len, 1):
            raise InvalidArgument("segment", f"segment {seg.index} needs {len(ids) + seg.min_len} tokens of context; "
                                  f"the stream limit is {self.max_tokens_per_stream}")
        seg.max_len = min(seg.max_len, room)
        seg.boundaries = _boundaries(st.schedule, seg.max_len)
        if st.use_cache:
            if st.kv is None:
                st.kv = self.lm.new_cache(self.max_tokens_per_stream)
                st.cached_ids = []
            keep = _common_prefix(st.cached_ids, ids)
            keep = min(keep, len(ids) - 1)        # always feed at least one id to get logits
            st.kv.crop(keep)
            st.cached_ids = st.cached_ids[:keep]
            st.reused_tokens += keep
            st.next_ids = ids[keep:]
        else:
            st.cached_ids = []
            st.next_ids = ids

    def _segment_input(self, st: StreamState, seg: Segment) -> list[int]:
        """[prompt text, history texts, this text, begin-of-audio, prompt speech, history speech].

        History (earlier segments of this stream) is dropped oldest first to stay within ``max_history_tokens``
        of speech context, as the published inference does.
        """
        p = st.prompt
        est = int(len(seg.text_ids) * (len(p.speech_tokens) + sum(len(h.tokens) for h in st.history) + 1)
                  / max(1, len(p.text_ids) + sum(len(h.text_ids) for h in st.history)))
        while st.history and (len(p.speech_tokens) + sum(len(h.tokens) for h in st.history) + est
                              > self.max_history_tokens):
            st.history.pop(0)
        text = list(p.text_ids)
        speech = list(p.speech_tokens)
        for h in st.history:
            text += h.text_ids
            speech += h.tokens
        return text + seg.text_ids + [self.lm.boa] + self.lm.speech_ids(speech)

    def _advance(self, st: StreamState, logits: torch.Tensor) -> None:
        seg = st.current
        tok = self.lm.sample(logits, seg.tokens, st.params, st.generator, allow_end=len(seg.tokens) >= seg.min_len)
        finished = tok < 0 or len(seg.tokens) + 1 >= seg.max_len
        if tok >= 0:
            seg.tokens.append(tok)
            st.tokens_total += 1
            st.next_ids = [self.lm.ats + tok]
        if finished:
            st.history.append(seg)
            st.current = None
            st.next_ids = []
            self._emit(st, seg, final=True)
            st.last_active = time.monotonic()
        elif seg.next_boundary < len(seg.boundaries) and len(seg.tokens) >= seg.boundaries[seg.next_boundary]:
            seg.next_boundary += 1
            self._emit(st, seg, final=False)

    def _emit(self, st: StreamState, seg: Segment, final: bool) -> None:
        with self._cv:
            st.ahead += 1
        st.sink.chunk(st, seg.index, list(seg.tokens), final, seg.max_len)


def _boundaries(schedule: list[int], max_len: int) -> list[int]:
    """Token counts at which a chunk is due: schedule [15, 25, 50] → 15, 40, 90, 140, ... below max_len."""
    out, total = [], 0
    for size in block_sizes(schedule, max_len):
        total += size
        if total < max_len:
            out.append(total)
    return out


def block_sizes(schedule: list[int], n_tokens: int) -> list[int]:
    """The chunk schedule cut to ``n_tokens``: [15, 25, 50], 100 → [15, 25, 50, 10]. The acoustic model's
    block-causal attention follows the same blocks whether the audio is streamed or rendered at once."""
    out, total, i = [], 0, 0
    while total < n_tokens:
        size = min(schedule[min(i, len(schedule) - 1)], n_tokens - total)
        out.append(size)
        total += size
        i += 1
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i

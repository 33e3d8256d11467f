"""Continuous batching of speech-token decoding: one scheduler thread per pod steps every active stream together.

The scheduler is bookkeeping only. It talks to the model through a narrow interface (:class:`StepModel`: make a
cache, one packed forward over many streams, a full forward without cache, sample a token) and gets the model's
input layout from the engine (:class:`PromptLayout`: the ids a segment is decoded from, the id fed after a sampled
token, a segment's length bounds). It never looks inside a voice's prompt; a stream becomes runnable once the engine
hands it its prompt (:meth:`Scheduler.set_prompt`, built on another thread so a new voice never stalls this one).

Each stream owns one cache for its whole life. A pass of the scheduler:
  1. picks the runnable streams: those starting a segment (a prefill of whatever the cache does not hold yet — the
     longest common prefix with what it holds is kept, so segment 2 reuses segment 1's context) and those in the
     middle of a segment (one token each); a stream whose reader is too far behind is skipped (back-pressure);
  2. runs ONE packed forward over all of them, or, for streams opened with ``use_cache=False``, a full forward over
     their whole sequence;
  3. samples a token per stream (all streams' rows in one set of tensor ops where the model offers
     ``sample_batch``; each stream's draws from its own generator) and, every chunk boundary, hands the tokens so far to the sink (the acoustic side).
New streams join between passes; a finished, cancelled or expired stream leaves and its cache is freed at once.
If the thread itself dies (an exception outside a pass), ``on_dead`` is called so the engine can fail every stream
and take the process out of service instead of leaving streams to hang.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from shared.errors import InvalidArgument

from .lm import SamplingParams

log = logging.getLogger("decoder.glmtts")

TOKEN_RATE = 25          # speech tokens per second of audio


class StepCache(Protocol):
    nbytes: int

    def crop(self, n: int) -> None: ...

    def free(self) -> None: ...


class StepModel(Protocol):
    """What the scheduler needs from the LM, and nothing more."""

    def new_cache(self, max_tokens: int) -> StepCache: ...

    def packed_forward(self, items: list[tuple[StepCache, list[int]]]) -> torch.Tensor:
        """Append each item's ids to its cache; next-token logits ``[len(items), vocab]``."""

    def full_forward(self, ids: list[int]) -> torch.Tensor:
        """No cache: next-token logits ``[vocab]`` after ``ids``."""

    def sample(self, logits: torch.Tensor, history: list[int], params: SamplingParams,
               generator: torch.Generator | None, allow_end: bool) -> int:
        """A speech token number, or -1 for end of audio."""

    # optional: ``sample`` for all rows of a pass at once (``SpeechLM.sample_batch``); a model without it (or with
    # it set to None) is sampled row by row
    # def sample_batch(self, logits, histories, params, generators, allow_end) -> list[int]: ...


class PromptLayout(Protocol):
    """The model's input layout, supplied by the engine (``prompt.GLMTTSLayout`` for GLM-TTS)."""

    def length_bounds(self, text_ids: list[int]) -> tuple[int, int]: ...

    def segment_input(self, prompt: Any, history: list, text_ids: list[int]) -> list[int]:
        """The ids a segment is decoded from; may prune ``history`` (oldest first) in place."""

    def token_input(self, token: int) -> int: ...


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

    def __init__(self, sid: int, schedule: list[int], params: SamplingParams, seed: int,
                 use_cache: bool, sink, max_ahead: int, prompt: Any = None):
        self.id = sid
        self.prompt = prompt                     # opaque to the scheduler; None until the engine has built it
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
        self.kv: StepCache | None = None
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
        if self.closed or self.done or self.prompt is None or self.ahead >= self.max_ahead:
            return False
        return self.current is not None or bool(self.pending)


class Scheduler:
    def __init__(self, lm: StepModel, layout: PromptLayout, *, max_prefill_tokens: int = 1024,
                 max_tokens_per_stream: int = 4096, idle_ttl_s: float = 60.0,
                 on_dead: Callable[[str, BaseException], None] | None = None):
        self.lm = lm
        self.layout = layout
        self.max_prefill_tokens = max_prefill_tokens
        self.max_tokens_per_stream = max_tokens_per_stream
        self.idle_ttl_s = idle_ttl_s
        self.on_dead = on_dead
        self.dead: BaseException | None = None
        self._cv = threading.Condition()
        self._streams: dict[int, StreamState] = {}
        self._busy: set[int] = set()             # streams inside the pass running now
        # streams removed during the pass using them: they hold their cache until the pass ends, and count in
        # active() / cache_bytes() until then
        self._leaving: dict[int, StreamState] = {}
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
            for st in self._leaving.values():
                self._free(st)
            self._leaving.clear()

    # -- called from the event loop -----------------------------------------------------------------------------

    def add(self, st: StreamState) -> None:
        with self._cv:
            self._streams[st.id] = st
            self._cv.notify_all()

    def set_prompt(self, st: StreamState, prompt: Any) -> None:
        """The stream's prompt is ready (built off this thread): it may start decoding."""
        with self._cv:
            st.prompt = prompt
            self._cv.notify_all()

    def fail(self, st: StreamState, exc: BaseException) -> None:
        """The stream cannot go on (e.g. its voice could not be built): fail it alone."""
        with self._cv:
            if st.done or st.closed:
                return
            st.done = True
        st.sink.fail(st, exc)

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
        """Abort and forget a stream; its cache is freed now, or right after the pass using it (until then it still
        counts in :meth:`active` and :meth:`cache_bytes`). A stream added meanwhile takes blocks only in a later
        pass, after that free, so the engine may admit one as soon as this returns."""
        with self._cv:
            st.closed = True
            self._streams.pop(st.id, None)
            if st.id in self._busy:
                self._leaving[st.id] = st
            else:
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
        """Bytes of cache held by the streams, removed ones still in a pass included."""
        with self._cv:
            states = list(self._streams.values()) + list(self._leaving.values())
            return sum(st.kv.nbytes for st in states if st.kv is not None)

    def active(self) -> int:
        """Streams known to the scheduler, removed ones whose cache the running pass still holds included."""
        with self._cv:
            return len(self._streams) + len(self._leaving)

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

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.dead is None

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - whatever killed the thread, the engine must hear of it
            self.dead = exc
            if self.on_dead is not None:
                self.on_dead("scheduler", exc)
            log.critical("glmtts scheduler thread died", exc_info=exc)

    def _next_batch(self) -> list[StreamState] | None:
        """Wait for runnable streams (under the lock); None when stopping."""
        while not self._stop:
            batch = [st for st in self._streams.values() if st.runnable()]
            if batch:
                return batch
            self._expire_idle()
            self._cv.wait(timeout=min(1.0, self.idle_ttl_s))
        return None

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                batch = self._next_batch()
                if batch is None:
                    return
                self._busy = {st.id for st in batch}     # under the same lock: remove() now defers the free
            self._run_batch(batch)

    def step(self) -> int:
        """One pass now, on the calling thread, over the streams runnable now; returns how many it served. The
        scheduler thread does this in a loop; tests drive it directly (without starting the thread)."""
        with self._cv:
            batch = [st for st in self._streams.values() if st.runnable()]
            self._busy = {st.id for st in batch}
        if batch:
            self._run_batch(batch)
        return len(batch)

    def _run_batch(self, batch: list[StreamState]) -> None:
        """One pass over ``batch``, whose ids the caller put in ``_busy`` under the lock."""
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
                        self._leaving.pop(st.id, None)
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
                except Exception as exc:  # this stream's text is unusable: fail it alone
                    st.done = True
                    st.sink.fail(st, exc)
                    continue
                prefill_budget -= len(st.next_ids)
            (cached if st.use_cache else uncached).append(st)
        rows = []
        if cached:   # one device→host copy per pass; sampling runs on the CPU with each stream's own generator
            rows.append(self.lm.packed_forward([(st.kv, st.next_ids) for st in cached]).cpu())
        for st in uncached:
            st.cached_ids.extend(st.next_ids)
            rows.append(self.lm.full_forward(st.cached_ids).cpu()[None])
        self.steps += 1
        served = cached + uncached
        if not served:
            return
        logits = rows[0] if len(rows) == 1 else torch.cat(rows)
        for st in cached:
            st.cached_ids.extend(st.next_ids)
        segs = [st.current for st in served]
        allow = [len(seg.tokens) >= seg.min_len for seg in segs]
        sample_batch = getattr(self.lm, "sample_batch", None)
        if sample_batch is not None:      # one set of tensor ops for all rows; per-stream draws inside
            tokens = sample_batch(logits, [seg.tokens for seg in segs], [st.params for st in served],
                                  [st.generator for st in served], allow)
        else:
            tokens = [self.lm.sample(logits[i], seg.tokens, st.params, st.generator, allow_end=allow[i])
                      for i, (st, seg) in enumerate(zip(served, segs))]
        for st, tok in zip(served, tokens):
            self._advance(st, tok)

    def _start_segment(self, st: StreamState) -> None:
        with self._cv:
            seg = st.pending.popleft()
        st.current = seg
        seg.min_len, seg.max_len = self.layout.length_bounds(seg.text_ids)
        ids = self.layout.segment_input(st.prompt, st.history, seg.text_ids)
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

    def _advance(self, st: StreamState, tok: int) -> None:
        """``tok``: the stream's sampled speech token, or -1 for end of audio."""
        seg = st.current
        finished = tok < 0 or len(seg.tokens) + 1 >= seg.max_len
        if tok >= 0:
            seg.tokens.append(tok)
            st.tokens_total += 1
            st.next_ids = [self.layout.token_input(tok)]
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

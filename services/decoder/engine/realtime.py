"""Playback-deadline scheduling and admission by real-time capacity, as pure bookkeeping (no threads, no model, an
injectable clock), for an engine with one model that synthesizes one job at a time.

- Every stream has a playback clock (shared.playback): audio delivered minus time since its first chunk.
- ``pick()`` chooses the next job: a stream that has no audio yet goes first (its first segment before anyone's
  look-ahead, oldest first); otherwise the stream whose audio runs out first. A job is the stream's next segment,
  merged with the segments queued after it (more context, better prosody) as long as the merged job can be
  synthesized within a share of the time before the stream, or the next most urgent one, runs dry; a segment too
  long for that time is split (``split``, at a word boundary) so the stream never runs dry waiting for all of it.
- ``cost`` is measured: seconds of compute per second of audio over the recent jobs (throughput = 1 / cost).
- ``admit()`` refuses a new stream when the streams already admitted, plus it, would need more compute per second
  than ``target_utilization``: it is refused before anyone stalls, with a retry hint.
- Measurement, the streams' playback clocks, who needs capacity, admission and the tenants' fair shares are
  ``capacity.FairCapacity``'s (shared with the other engines that admit by real-time capacity): a tenant's streams
  beyond its fair share, and batch streams, are picked after everyone's share; a live stream already ``ahead_s``
  (3 s) ahead of its listener after batch streams (a reader that takes audio faster than it plays never starves
  batch work).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from shared.playback import PlaybackClock

from .capacity import Decision, FairCapacity


@dataclass
class Work:
    item: object                     # what the engine synthesizes (a segment)
    audio_s: float                   # estimated seconds of audio it gives
    weight: int = 0                  # model input size (tokens), for the merge limit
    final: bool = True               # False: the first part of a split segment (the rest follows)


@dataclass
class StreamState:
    key: object
    opened_at: float
    seq: int
    clock: PlaybackClock = field(default_factory=PlaybackClock)
    pending: deque = field(default_factory=deque)
    first_work_at: float | None = None
    last_work_at: float | None = None
    running: bool = False
    blocked: bool = False            # its reader has not taken the last job's audio yet (back-pressure)
    ended: bool = False
    jobs: int = 0


class RealtimeScheduler:
    def __init__(self, clock=time.monotonic, cost: float = 0.3, target_utilization: float = 0.85,
                 merge_share: float = 0.5, first_job_s: float = 0.4, max_job_s: float = 1.5, max_weight: int = 500,
                 idle_s: float = 5.0, window: int = 24, min_streams: int = 1, split=None, min_split_s: float = 2.0,
                 max_batch: int = 2, ahead_s: float = 3.0):
        self.clock = clock
        self.split = split                    # split(work, audio_s) -> (head, tail) or None: cut a segment shorter
        self.min_split_s = min_split_s        # never split off less audio than this (nor leave less behind)
        self.capacity = FairCapacity(clock=clock, cost=cost, target_utilization=target_utilization, workers=1,
                                     min_streams=min_streams, idle_s=idle_s, window=window, max_batch=max_batch,
                                     ahead_s=ahead_s)
        self.target_utilization = target_utilization
        self.merge_share = merge_share        # a merged job may take this share of the urgent streams' margin
        self.first_job_s = first_job_s        # while a stream waits for its first audio, jobs are kept this short
        self.max_job_s = max_job_s            # no job longer than this (compute), so a new stream never waits long
        self.max_weight = max_weight
        self.streams: dict[object, StreamState] = {}
        self._seq = 0

    # ---- measurement (FairCapacity's) ----------------------------------------------------------------------------
    @property
    def cost(self) -> float:
        """Seconds of compute per second of audio (measured over recent jobs; the warm-up figure before)."""
        return self.capacity.cost

    @property
    def throughput(self) -> float:
        """Seconds of audio per second of wall time this engine makes when busy."""
        return self.capacity.throughput

    def demand(self) -> int:
        """Live streams that need capacity now."""
        return sum(self.capacity.demand().values())

    def headroom(self) -> float:
        """How many more real-time streams fit (negative: over capacity)."""
        return self.capacity.headroom()

    # ---- streams -------------------------------------------------------------------------------------------------
    def admit(self, tenant: str = "", batch: bool = False) -> Decision:
        """One more stream fits if all live streams that need compute, and it, stay within ``target_utilization``
        of the measured throughput, or its tenant is below its fair share (``FairCapacity.admit``)."""
        return self.capacity.admit(tenant, batch)

    def open(self, key, tenant: str = "", batch: bool = False) -> StreamState:
        self._seq += 1
        self.capacity.open(key, tenant, batch)
        st = StreamState(key, self.clock(), self._seq, clock=self.capacity.clock_of(key))
        self.streams[key] = st
        return st

    def add(self, key, work: Work) -> None:
        st = self.streams[key]
        now = self.clock()
        if st.first_work_at is None:
            st.first_work_at = now
        st.last_work_at = now
        st.pending.append(work)
        self.capacity.activity(key)
        self.capacity.set_busy(key, True)

    def end(self, key) -> None:
        self.streams[key].ended = True
        self.capacity.end(key)

    def remove(self, key) -> None:
        self.streams.pop(key, None)
        self.capacity.remove(key)

    def finished(self, key) -> bool:
        """All its text came and all of it was synthesized."""
        st = self.streams.get(key)
        return st is None or st.ended and not st.pending and not st.running

    def delivered(self, key, seconds: float) -> None:
        self.capacity.delivered(key, seconds)

    def set_blocked(self, key, blocked: bool) -> None:
        st = self.streams.get(key)
        if st is not None:
            st.blocked = blocked

    # ---- ordering ------------------------------------------------------------------------------------------------
    def _urgency(self, st: StreamState, now: float, in_share: set):
        cls = self.capacity.service_class(st.key, in_share, now)
        if not st.clock.started:
            return (cls, 0, st.first_work_at if st.first_work_at is not None else now, st.seq)
        return (cls, 1, st.clock.margin(now), st.seq)

    def pick(self):
        """The next job: (key, [work items]) or None when nothing can run. Everyone's fair share first (a tenant's
        excess and batch streams after), then a new stream's first segment, then the stream that runs dry first."""
        now = self.clock()
        ready = [s for s in self.streams.values() if s.pending and not s.running and not s.blocked]
        if not ready:
            return None
        in_share = self.capacity.in_share_keys() if len(ready) > 1 else {ready[0].key}
        ready.sort(key=lambda s: self._urgency(s, now, in_share))
        st = ready[0]
        cost = self.cost
        others = ready[1:]
        if st.clock.started:
            # the job must be done before this stream, or the next most urgent one, runs dry
            m = st.clock.margin(now)
            if others and others[0].clock.started:
                m = min(m, others[0].clock.margin(now))
            m = max(m, 0.0)
            # a stream without audio yet (its first segment queued, or its text still arriving) must not wait long
            waiting = any(not o.clock.started and not o.ended for o in self.streams.values() if o is not st)
            cap = self.first_job_s if waiting else self.max_job_s
            limit, budget = min(0.8 * m, cap), min(self.merge_share * m, cap)
            self._split_head(st, limit / cost)
        # (a first segment is never split: the frontend made it short, and cutting it costs intelligibility)
        items = [st.pending.popleft()]
        if st.clock.started:
            total_s, weight = items[0].audio_s, items[0].weight
            while st.pending and items[-1].final:
                nxt = st.pending[0]
                if weight + nxt.weight > self.max_weight or cost * (total_s + nxt.audio_s) > budget:
                    break
                items.append(st.pending.popleft())
                total_s += nxt.audio_s
                weight += nxt.weight
        st.running = True
        st.jobs += 1
        return st.key, items

    def _split_head(self, st: StreamState, audio_s: float) -> None:
        """If the stream's next segment gives more audio than ``audio_s``, split it (when the engine can)."""
        head = st.pending[0]
        cut = max(audio_s, self.min_split_s)
        if self.split is None or head.audio_s <= cut * 1.25 or head.audio_s - cut < self.min_split_s / 2:
            return                            # short pieces alone sound much worse: split only long segments
        parts = self.split(head, cut)
        if parts:
            st.pending.popleft()
            st.pending.extendleft(reversed(parts))

    def done(self, key, compute_s: float, audio_s: float) -> None:
        """A job of ``key`` finished: ``compute_s`` of model time gave ``audio_s`` of audio."""
        if audio_s > 0 and compute_s >= 0:
            self.capacity.record(compute_s, audio_s)
        st = self.streams.get(key)
        if st is not None:
            st.running = False
            self.capacity.set_busy(key, bool(st.pending))

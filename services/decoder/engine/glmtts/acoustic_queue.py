"""The glmtts acoustic stage's work queue, ordered by playback deadline (as the kokoro engine's scheduler is).

The LM thread hands token chunks to one acoustic thread (flow + vocoder). With several streams, first come first
served lets a stream with seconds of audio queued hold up one that is about to run dry, or a new stream's first
chunk. Here every stream keeps its own jobs in order (its chunks, then its end), and ``get()`` takes the next job of
the stream that needs it most:
  1. control jobs (end, fail, drop: no model work) first;
  2. a stream that has no audio yet (its first chunk: the first audio a caller waits for), oldest first;
  3. else the stream whose playback runs dry first (``shared.playback``: audio delivered − time since its first
     chunk).
Thread-safe; ``put(None)`` stops the consumer (it gets None). Pure bookkeeping with an injectable clock.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque

from shared.playback import PlaybackClock

CONTROL = ("end", "fail", "drop")


class _Stream:
    __slots__ = ("jobs", "clock", "seq")

    def __init__(self, seq: int):
        self.jobs: deque = deque()
        self.clock = PlaybackClock()
        self.seq = seq


class AcousticQueue:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._cv = threading.Condition()
        self._streams: dict[object, _Stream] = {}
        self._seq = itertools.count()
        self._stop = False

    def put(self, job) -> None:
        """``job``: a tuple (kind, stream key, ...), or None to stop the consumer."""
        with self._cv:
            if job is None:
                self._stop = True
            else:
                key = job[1]
                st = self._streams.get(key)
                if st is None:
                    st = self._streams[key] = _Stream(next(self._seq))
                st.jobs.append(job)
            self._cv.notify()

    def _urgency(self, st: _Stream, now: float):
        head = st.jobs[0]
        if head[0] in CONTROL:
            return (0, 0.0, st.seq)
        if not st.clock.started:
            return (1, 0.0, st.seq)
        return (2, st.clock.margin(now), st.seq)

    def pick(self):
        """The next job, or None when there is none (does not wait)."""
        with self._cv:
            return self._pick()

    def _pick(self):
        ready = [(k, s) for k, s in self._streams.items() if s.jobs]
        if not ready:
            return None
        now = self.clock()
        key, st = min(ready, key=lambda ks: self._urgency(ks[1], now))
        job = st.jobs.popleft()
        if job[0] == "drop" and not st.jobs:
            del self._streams[key]              # the stream is gone: forget its clock
        return job

    def get(self):
        """Wait for the next job; None once stopped."""
        with self._cv:
            while True:
                if self._stop:
                    return None
                job = self._pick()
                if job is not None:
                    return job
                self._cv.wait()

    def delivered(self, key, seconds: float) -> None:
        """``seconds`` of the stream's audio went to its reader now."""
        with self._cv:
            st = self._streams.get(key)
            if st is not None:
                st.clock.deliver(self.clock(), seconds)

    def qsize(self) -> int:
        with self._cv:
            return sum(len(s.jobs) for s in self._streams.values())

"""A pod's real-time capacity, measured, and shared fairly between tenants: pure bookkeeping (no threads, no model,
an injectable clock), used by every engine that admits by real-time capacity.

- **Measured.** ``record(compute_s, audio_s)`` after each piece of model work; ``cost`` is compute seconds per second
  of audio over the recent work, ``capacity`` the real-time streams the pod carries at ``target_utilization`` of
  its ``workers`` (model threads).
- **Who needs capacity.** A live stream needs it while it has work queued or running, got text in the last
  ``idle_s`` seconds, or still has audio playing; an idle open stream (a bot waiting for its LLM) needs none.
- **Fair share.** Capacity is divided between the tenants that need it by max-min fairness (water-filling: a tenant
  that needs less than an equal part keeps what it needs, the rest is split among the others). A tenant alone may
  use all of it. ``admit`` takes a new live stream while the pod has room, and ALSO when the pod is full but the
  tenant holds less than its fair share while another tenant holds more than its own (so a pod that carries one
  stream still lets a second tenant in beside the first): that tenant's excess streams then yield
  (``in_share`` is False for them, and the engine's scheduler serves them after everyone's in-share streams), and
  its next stream is refused until it is back within its share. The refusal says which limit applied.
- **Starting streams.** With ``start_budget_s``, at most ``workers × start_budget_s / start_cost`` streams may be
  without audio yet at once (``start_cost``: the measured model time of a stream's first audio), so a burst of
  callers does not delay everyone's first audio and starve the streams already playing: the rest are refused at
  once, to try another pod.
- **Batch** streams (offline work) never count against live capacity: they are admitted while the pod has spare
  real-time capacity or no live stream needs any (at most ``max_batch`` at once), are served only after every live
  stream, and wait (the gateway retries) rather than fail when there is none.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from shared.errors import ResourceExhausted
from shared.playback import PlaybackClock


@dataclass
class Decision:
    ok: bool
    retry_after_s: float = 0.0
    limit: str = ""                       # which limit refused it: "capacity", "fair_share", "batch", "streams"
    reason: str = ""                      # for the refusal's message

    def message(self, engine: str) -> str:
        return f"{self.limit}: {engine} engine: {self.reason}"

    def check(self, engine: str) -> None:
        """RESOURCE_EXHAUSTED with retry info naming the limit that refused (``fair_share: …``), if it did."""
        if not self.ok:
            raise ResourceExhausted(self.message(engine), retry_after_s=self.retry_after_s)


@dataclass
class _Stream:
    tenant: str
    batch: bool
    opened_at: float
    seq: int
    clock: PlaybackClock = field(default_factory=PlaybackClock)
    first_work_at: float | None = None
    last_work_at: float | None = None
    busy: bool = False                    # work queued or running (the engine says)
    ended: bool = False


def fair_shares(demand: dict[str, int], capacity: float) -> dict[str, float]:
    """Max-min fair division of ``capacity`` between tenants wanting ``demand[t]`` streams each."""
    shares: dict[str, float] = {}
    left = dict(demand)
    cap = capacity
    while left:
        equal = cap / len(left)
        small = {t: d for t, d in left.items() if d <= equal}
        if not small:
            shares.update({t: equal for t in left})
            break
        for t, d in small.items():
            shares[t] = float(d)
            cap -= d
            del left[t]
    return shares


class FairCapacity:
    def __init__(self, clock=time.monotonic, cost: float = 0.1, target_utilization: float = 0.85,
                 workers: int = 1, min_streams: int = 1, idle_s: float = 5.0, window: int = 48,
                 max_batch: int = 2, hold_s: float = 2.0, start_budget_s: float = 0.0, start_cost: float = 0.03,
                 ahead_s: float = 3.0):
        self.clock = clock
        self.ahead_s = ahead_s                  # a live stream this far ahead of its listener is served after batch
        self.target_utilization = target_utilization
        self.workers = max(1, workers)
        self.min_streams = max(1, min_streams)
        self.idle_s = idle_s
        self.max_batch = max_batch
        self.hold_s = hold_s
        self.start_budget_s = start_budget_s    # 0 = no start limit
        self.start_cost = start_cost            # model seconds a stream needs for its first audio (measured, EMA)
        self.streams: dict[object, _Stream] = {}
        self._holds: dict[tuple, tuple[str, bool, float]] = {}  # admitted ahead: (tenant, id) → tenant, batch, expiry
        self._seq = 0
        self._work: deque = deque(maxlen=window)    # (compute s, audio s)
        self._cost0 = cost

    # ---- measurement ---------------------------------------------------------------------------------------------
    def record(self, compute_s: float, audio_s: float) -> None:
        """``compute_s`` of model time gave ``audio_s`` of audio (audio may be 0 for work that makes none yet)."""
        if compute_s >= 0 and audio_s >= 0 and compute_s + audio_s > 0:
            self._work.append((compute_s, audio_s))

    def record_start(self, compute_s: float) -> None:
        """A stream got its first audio after ``compute_s`` of model time (its first acoustic call and chunk)."""
        if compute_s > 0:
            self.start_cost += 0.2 * (compute_s - self.start_cost)

    @property
    def max_starting(self) -> float:
        """How many streams may be starting at once: all their first audio within ``start_budget_s`` of the
        workers' time (inf without a start limit)."""
        if not self.start_budget_s:
            return math.inf
        return max(float(self.min_streams), self.workers * self.start_budget_s / max(self.start_cost, 1e-6))

    def starting(self) -> int:
        """Live streams admitted that have no audio yet (those with their text coming, and the places held)."""
        now = self.clock()
        opened = sum(1 for st in self.streams.values()
                     if not st.batch and not st.clock.started and self._needs(st, now))
        return opened + sum(1 for _, batch, _ in self._live_holds(now) if not batch)

    @property
    def cost(self) -> float:
        """Seconds of compute per second of audio (measured over recent work; the warm-up figure before)."""
        audio = sum(a for _, a in self._work)
        if audio <= 0:
            return self._cost0
        return sum(c for c, _ in self._work) / audio

    @property
    def throughput(self) -> float:
        """Seconds of audio per second of wall time the pod makes when busy (all workers)."""
        return self.workers / max(self.cost, 1e-6)

    @property
    def capacity(self) -> float:
        """Real-time live streams the pod carries at its target utilization (never fewer than ``min_streams``, the
        streams it admits whatever the measured throughput)."""
        return max(self.target_utilization * self.throughput, float(self.min_streams))

    # ---- streams -------------------------------------------------------------------------------------------------
    def open(self, key, tenant: str = "", batch: bool = False) -> None:
        self._seq += 1
        self.streams[key] = _Stream(tenant, batch, self.clock(), self._seq)

    def remove(self, key) -> None:
        self.streams.pop(key, None)

    def activity(self, key) -> None:
        """Text (work) arrived for the stream now."""
        st = self.streams.get(key)
        if st is not None:
            st.last_work_at = self.clock()
            if st.first_work_at is None:
                st.first_work_at = st.last_work_at

    def set_busy(self, key, busy: bool) -> None:
        st = self.streams.get(key)
        if st is not None:
            st.busy = busy

    def end(self, key) -> None:
        st = self.streams.get(key)
        if st is not None:
            st.ended = True

    def delivered(self, key, seconds: float) -> None:
        st = self.streams.get(key)
        if st is not None:
            st.clock.deliver(self.clock(), seconds)

    def clock_of(self, key) -> PlaybackClock | None:
        st = self.streams.get(key)
        return st.clock if st is not None else None

    def _needs(self, st: _Stream, now: float) -> bool:
        if st.busy:
            return True
        margin = st.clock.margin(now)
        if margin is not None and margin > 0:
            return True
        if st.ended:
            return False
        last = st.last_work_at if st.last_work_at is not None else st.opened_at
        return now - last < self.idle_s

    def demand(self) -> dict[str, int]:
        """Live streams that need capacity now, per tenant (with the streams admitted ahead, see ``admit``)."""
        now = self.clock()
        out: dict[str, int] = {}
        for st in self.streams.values():
            if not st.batch and self._needs(st, now):
                out[st.tenant] = out.get(st.tenant, 0) + 1
        for tenant, batch, _ in self._live_holds(now):
            if not batch:
                out[tenant] = out.get(tenant, 0) + 1
        return out

    def _live_holds(self, now: float) -> list[tuple[str, bool, float]]:
        for key in [k for k, (_, _, until) in self._holds.items() if until <= now]:
            del self._holds[key]
        return list(self._holds.values())

    def claim(self, tenant: str, hold: str) -> bool:
        """A stream of ``tenant`` admitted ahead under ``hold`` (``admit(..., hold=)``) opens now: True if its place
        was still held (it is admitted without a second decision), False otherwise. Holds are per tenant: one
        tenant's request id never claims another's place."""
        if not hold:
            return False
        self._live_holds(self.clock())
        return self._holds.pop((tenant, hold), None) is not None

    def shares(self) -> dict[str, float]:
        return fair_shares(self.demand(), self.capacity)

    def in_share_keys(self) -> set:
        """The live streams within their tenant's fair share: all of them while the pod has room (or only one tenant
        needs it), else each tenant's
        oldest ``ceil(share)`` streams that need capacity (the others are its excess, served after everyone's share)."""
        now = self.clock()
        needing = sorted(((k, st) for k, st in self.streams.items() if not st.batch and self._needs(st, now)),
                         key=lambda ks: ks[1].seq)
        live = {k for k, st in self.streams.items() if not st.batch}
        if len(needing) <= self.capacity:
            return live
        demand: dict[str, int] = {}
        for _, st in needing:
            demand[st.tenant] = demand.get(st.tenant, 0) + 1
        if len(demand) < 2:
            return live                       # one tenant over capacity: no one else's share to protect
        shares = fair_shares(demand, self.capacity)
        taken: dict[str, int] = {}
        out = {k for k, st in self.streams.items() if not st.batch and not self._needs(st, now)}
        for k, st in needing:
            n = taken.get(st.tenant, 0)
            if n < math.ceil(shares[st.tenant] - 1e-9):
                out.add(k)
            taken[st.tenant] = n + 1
        return out

    def service_class(self, key, in_share: set, now: float) -> int:
        """The order in which the engines' schedulers serve a stream's work: 0 a live stream within its tenant's fair
        share (``in_share``: ``in_share_keys()``), 1 a tenant's excess, 2 batch, 3 a live stream already ``ahead_s``
        ahead of its listener (its look-ahead waits behind batch work: a reader that takes audio faster than it plays
        never starves a batch job), 4 unknown."""
        st = self.streams.get(key)
        if st is None:
            return 4
        if st.batch:
            return 2
        margin = st.clock.margin(now)
        if margin is not None and margin >= self.ahead_s:
            return 3
        return 0 if key in in_share else 1

    def in_share(self, key) -> bool:
        """Is this live stream within its tenant's fair share (see ``in_share_keys``)?"""
        return key in self.in_share_keys()

    def headroom(self) -> float:
        """How many more live real-time streams fit now (negative: over capacity)."""
        return self.capacity - sum(self.demand().values())

    # ---- admission -----------------------------------------------------------------------------------------------
    def admit(self, tenant: str = "", batch: bool = False, hold: str = "") -> Decision:
        """Would a stream of ``tenant`` be admitted now? ``hold``: if so, keep its place for ``hold_s`` under that
        id (a stream that asks before its first segment, so that many arriving at once are not all told yes); it
        counts as a stream that needs capacity until the stream opens (``claim``) or the time runs out."""
        decision = self._decide(tenant, batch)
        if decision.ok and hold:
            self._holds[(tenant, hold)] = (tenant, batch, self.clock() + self.hold_s)
        return decision

    def _decide(self, tenant: str, batch: bool) -> Decision:
        demand = self.demand()
        total = sum(demand.values())
        cap = self.capacity
        retry = self._retry_after()
        if batch:
            running = sum(1 for s in self.streams.values() if s.batch) + \
                sum(1 for _, b, _ in self._live_holds(self.clock()) if b)
            if running >= self.max_batch:
                return Decision(False, retry, "batch", f"{running} batch streams are running (the most at once)")
            if total and total + 1 > cap:
                return Decision(False, retry, "batch", f"live streams use the real-time capacity ({total} of "
                                                       f"{cap:.1f}); batch work waits for spare capacity")
            return Decision(True)
        starting = self.starting()
        if starting + 1 > self.max_starting:
            return Decision(False, min(max(self.start_cost * starting / self.workers, 0.2), 5.0), "capacity",
                            f"{starting} streams are starting: the decoder gives first audio to {self.max_starting:.0f}"
                            f" at once within {self.start_budget_s * 1000:.0f} ms of its model time "
                            f"({self.start_cost * 1000:.0f} ms a stream on {self.workers} worker(s))")
        if total < self.min_streams or total + 1 <= cap:
            return Decision(True)
        mine = demand.get(tenant, 0)
        with_me = dict(demand)
        with_me[tenant] = mine + 1
        shares = fair_shares(with_me, cap)
        share = shares[tenant]
        others_over = any(d > shares[t] + 1e-9 for t, d in with_me.items() if t != tenant)
        if mine < share - 1e-9 and others_over:
            return Decision(True)          # below its share while another tenant is above its own
        if len(with_me) > 1:
            return Decision(False, retry, "fair_share",
                            f"tenant's fair share of this decoder is in use ({mine} of {share:.1f} real-time "
                            f"streams; {len(with_me) - 1} other tenant(s) share its capacity of {cap:.1f})")
        return Decision(False, retry, "capacity",
                        f"decoder at its real-time capacity ({total} streams of {cap:.1f}: {self.cost:.3f} s of "
                        f"compute per s of audio on {self.workers} worker(s)); one more would make them stall")

    def _retry_after(self) -> float:
        """The soonest an ended stream frees its share: when its audio has played (0.2 .. 5 s)."""
        now = self.clock()
        ends = [max(0.0, st.clock.margin(now) or 0.0) for st in self.streams.values() if st.ended and not st.batch]
        return min(max(min(ends, default=1.0), 0.2), 5.0)

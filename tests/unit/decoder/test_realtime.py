"""The kokoro engine's scheduler as pure bookkeeping: a fake clock and a fake model (compute = cost x audio)."""
from services.decoder.engine.realtime import RealtimeScheduler, Work
from tests.fakes import FakeClock


def split_audio(work, audio_s):
    """The fake model's segments can be cut anywhere (a real one: at a word boundary)."""
    return [Work(work.item, audio_s, final=False), Work(work.item, work.audio_s - audio_s, final=work.final)]


def sched_with(clock, cost=0.2, **kw):
    s = RealtimeScheduler(clock=clock, cost=cost, **kw)
    s.done(None, cost * 10, 10)            # the "warm-up" measurement
    return s


def play(s, clock, key, seconds):
    """A job of ``key`` ran: its audio is delivered now."""
    s.done(key, s.cost * seconds, seconds)
    s.delivered(key, seconds)


def test_the_stream_that_runs_dry_first_goes_first():
    clock = FakeClock()
    s = sched_with(clock)
    for k in "ABC":
        s.open(k)
    for k, audio in (("A", 3.0), ("B", 0.5)):
        s.add(k, Work(k + "0", 1.0))
        assert s.pick()[0] == k
        play(s, clock, k, audio)            # A has 3 s queued to play, B 0.5 s
    for k in "ABC":
        s.add(k, Work(k + "1", 1.0))
    order = []
    while (job := s.pick()) is not None:
        order.append(job[0])
        s.done(job[0], 0.1, 1.0)
    # C has no audio yet: its first segment first; then B (runs dry in 0.5 s), then A (3 s)
    assert order == ["C", "B", "A"]


def test_margins_follow_the_clock():
    clock = FakeClock()
    s = sched_with(clock)
    for k in "AB":
        s.open(k)
        s.add(k, Work(k, 1.0))
        assert s.pick()[0] == k
    play(s, clock, "A", 1.0)                # A: 1 s at t=0
    clock.t = 0.5
    play(s, clock, "B", 2.0)                # B: 2 s at t=0.5 → dry at 2.5; A dry at 1.0
    for k in "BA":
        s.add(k, Work(k + "1", 1.0))
    assert s.pick()[0] == "A"
    clock.t = 1.5                           # A ran dry 0.5 s ago: a stall
    play(s, clock, "A", 1.0)
    st = s.streams["A"].clock
    assert st.stalls == 1 and abs(st.stall_s - 0.5) < 1e-9 and st.min_margin_s < 0


def test_a_new_streams_first_segment_goes_before_look_ahead_and_keeps_jobs_short():
    clock = FakeClock()
    s = sched_with(clock, cost=0.2, first_job_s=0.4)
    s.open("A")
    s.add("A", Work("a0", 1.0))
    s.pick()
    play(s, clock, "A", 10.0)               # A is 10 s ahead
    for i in range(8):
        s.add("A", Work(f"a{i + 1}", 1.0))
    s.open("N")
    s.add("N", Work("n0", 1.0))
    key, items = s.pick()
    assert key == "N" and len(items) == 1   # the newcomer's first segment, alone
    play(s, clock, "N", 1.0)
    s.add("N", Work("n1", 1.0))
    s.open("M")
    s.add("M", Work("m0", 1.0))
    assert s.pick()[0] == "M"                # before N's second segment and A's look-ahead
    play(s, clock, "M", 1.0)
    key, items = s.pick()
    assert key == "N" and len(items) == 1   # N runs dry in 1 s, A in 10 s
    play(s, clock, "N", 1.0)
    s.open("L")
    s.add("L", Work("l0", 1.0))
    key, items = s.pick()
    assert key == "L"
    # A's look-ahead while nobody waits may be merged; while L... (L has been served) a long merge is allowed
    key, items = s.pick()
    assert key == "A" and len(items) > 1


def test_look_ahead_is_kept_short_while_a_new_stream_waits():
    clock = FakeClock()
    s = sched_with(clock, cost=0.2, first_job_s=0.4, split=split_audio, min_split_s=0.6)
    s.open("A")
    s.add("A", Work("a0", 1.0))
    s.pick()
    play(s, clock, "A", 10.0)
    s.add("A", Work("a1", 6.0))             # 1.2 s of compute
    s.open("N")                             # N's text is still arriving: its first segment will come any moment
    key, items = s.pick()
    assert key == "A" and sum(w.audio_s for w in items) * s.cost <= 0.4 + 1e-9   # split: N waits ≤ 0.4 s


def test_queued_segments_are_merged_only_within_the_margin():
    clock = FakeClock()
    s = sched_with(clock, cost=0.2, merge_share=0.5, max_job_s=10)
    s.open("A")
    s.add("A", Work("a0", 1.0))
    s.pick()
    play(s, clock, "A", 1.0)                # 1 s to play: a job may take 0.5 s → 2.5 s of audio at cost 0.2
    for i in range(6):
        s.add("A", Work(f"a{i + 1}", 1.0, weight=10))
    key, items = s.pick()
    assert [w.item for w in items] == ["a1", "a2"]
    play(s, clock, "A", 2.0)                # now 2 s + 1 s ahead... (t = 0): margin 3 s → 7.5 s of audio
    key, items = s.pick()
    assert [w.item for w in items] == ["a3", "a4", "a5", "a6"]


def test_merging_respects_the_models_input_limit():
    clock = FakeClock()
    s = sched_with(clock, cost=0.01, max_weight=100, max_job_s=100)
    s.open("A")
    s.add("A", Work("a0", 1.0, weight=10))
    s.pick()
    play(s, clock, "A", 30.0)
    for i in range(5):
        s.add("A", Work(i, 1.0, weight=40))
    assert len(s.pick()[1]) == 2


def test_a_blocked_stream_is_not_picked():
    clock = FakeClock()
    s = sched_with(clock)
    s.open("A")
    s.add("A", Work("a0", 1.0))
    s.set_blocked("A", True)
    assert s.pick() is None
    s.set_blocked("A", False)
    assert s.pick()[0] == "A"


# ---- admission: refuse before stalling others -----------------------------------------------------------------------
def segment_sizes(rtf, total_s=16.0, first_s=0.8, min_s=1.7, max_s=8.0, share=0.6):
    """Seconds of audio per segment as the frontend's schedule sizes them for a decoder at ``rtf`` per stream."""
    sizes = [first_s]
    while sum(sizes) < total_s:
        sizes.append(min(max_s, max(min_s, share * sizes[-1] / rtf)))
    return sizes


def simulate(n_streams, cost, admit=True, stagger_s=0.3, overhead_s=0.02):
    """n LLM-paced replies through one model, segments sized by the schedule for the admitted load; each piece of
    text arrives 0.2 s after the one before. Returns (admitted keys, refused count, scheduler)."""
    clock = FakeClock()
    s = sched_with(clock, cost=cost, split=split_audio, min_split_s=0.6)
    expected = min(n_streams, int(0.85 / cost)) if admit else n_streams
    sizes = segment_sizes(cost * expected)
    arrivals, admitted, refused = [], [], 0
    for k in range(n_streams):
        clock.t = k * stagger_s
        if admit and not s.admit().ok:
            refused += 1
            continue
        s.open(k)
        admitted.append(k)
        arrivals += [(k * stagger_s + 0.2 * i, k, Work((k, i), a)) for i, a in enumerate(sizes)]
        # admission looks at who is open right now: let the opened streams' work arrive in time order
        pending = sorted(arrivals, key=lambda x: x[0])
        arrivals = pending
    clock.t = 0.0
    arrivals.sort(key=lambda x: x[0])
    i = 0
    ended = set()
    while True:
        while i < len(arrivals) and arrivals[i][0] <= clock.t:
            s.add(arrivals[i][1], arrivals[i][2])
            i += 1
        job = s.pick()
        if job is None:
            if i >= len(arrivals):
                break
            clock.t = arrivals[i][0]
            continue
        key, items = job
        audio = sum(w.audio_s for w in items)
        clock.t += overhead_s + cost * audio
        s.done(key, overhead_s + cost * audio, audio)
        s.delivered(key, audio)
        if not s.streams[key].pending and key not in ended and all(a[1] != key for a in arrivals[i:]):
            s.end(key)
            ended.add(key)
    return admitted, refused, s


def test_admission_refuses_the_stream_that_would_make_others_stall():
    cost = 0.2                                            # 5x real time: about 4 streams at 85 % utilization
    admitted, refused, s = simulate(8, cost)
    assert 3 <= len(admitted) <= 4 and refused == 8 - len(admitted)
    assert all(st.clock.stalls == 0 for st in s.streams.values()), [st.clock.stall_s for st in s.streams.values()]
    # the same load without admission: everyone is served, and streams stall
    _, _, over = simulate(8, cost, admit=False)
    assert sum(st.clock.stalls for st in over.streams.values()) > 0


def test_refusal_carries_a_retry_hint_and_a_finished_stream_frees_its_share():
    clock = FakeClock()
    s = sched_with(clock, cost=0.4, target_utilization=0.85)
    s.open("A")
    s.add("A", Work("a", 1.0))
    s.open("B")
    d = s.admit()
    assert not d.ok and 0.2 <= d.retry_after_s <= 5.0 and d.limit == "capacity"    # 3 x 0.4 > 0.85
    job = s.pick()
    play(s, clock, job[0], 1.0)
    s.end("A")                                            # A has all its audio; it only plays out now
    s.end("B")
    assert s.admit().ok
    assert s.headroom() > 0


def test_an_idle_open_stream_stops_counting_after_idle_s():
    clock = FakeClock()
    s = sched_with(clock, cost=0.5, idle_s=5.0)
    s.open("A")                                           # opened, nothing sent
    assert s.demand() == 1
    clock.t = 6.0
    assert s.demand() == 0


def test_a_tenants_excess_and_batch_streams_are_served_after_everyones_share():
    clock = FakeClock()
    s = sched_with(clock, cost=0.5, target_utilization=1.0)     # capacity: 2 real-time streams
    for key, tenant, batch in (("bob1", "bob", False), ("bob2", "bob", False), ("bob3", "bob", False),
                               ("job", "bob", True), ("alice", "alice", False)):
        s.open(key, tenant, batch)
        s.add(key, Work(key + "0", 1.0))
    while (job := s.pick()) is not None:                          # everyone's first audio out of the way
        s.done(job[0], 0.5, 1.0)
    for key in ("bob1", "bob2", "bob3", "job", "alice"):
        s.delivered(key, 2.0)
        s.add(key, Work(key + "1", 1.0))
    s.delivered("alice", 0.5)                                     # alice has the most audio queued …
    s.delivered("bob3", -1.5)                                     # … bob3 the least: he would run dry first
    order = []
    while (job := s.pick()) is not None:
        order.append(job[0])
        s.done(job[0], 0.5, 1.0)
    # bob is over his share of 1 (alice needs hers): bob2 and bob3 are his excess, served after alice's share and
    # his own (bob1); the batch job last
    assert order == ["bob1", "alice", "bob3", "bob2", "job"]


def test_batch_work_goes_before_the_look_ahead_of_a_live_stream_far_ahead_of_its_listener():
    """A live reader taking audio faster than it plays would keep the model busy for ever: with 3 s (ahead_s) queued
    its next job waits behind a batch line's; with less it goes first."""
    clock = FakeClock()
    s = sched_with(clock, cost=0.2)
    for key, batch in (("far", False), ("job", True), ("near", False)):
        s.open(key, "bob", batch)
        s.add(key, Work(key + "0", 1.0))
    while (job := s.pick()) is not None:
        s.done(job[0], 0.2, 1.0)
    for key, queued in (("far", 3.5), ("job", 0.1), ("near", 2.5)):
        s.delivered(key, queued)
        s.add(key, Work(key + "1", 1.0))
    order = []
    while (job := s.pick()) is not None:
        order.append(job[0])
        s.done(job[0], 0.2, 1.0)
    assert order == ["near", "job", "far"]

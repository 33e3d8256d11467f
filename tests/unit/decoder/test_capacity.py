"""Real-time capacity shared fairly between tenants, as pure bookkeeping (fake clock, no model)."""
from services.decoder.engine.capacity import FairCapacity, fair_shares
from tests.fakes import FakeClock


def pod(clock, streams=4.0, **kw):
    """A pod whose measured capacity is ``streams`` real-time streams (cost = 1/streams, target 1.0, 1 worker)."""
    cap = FairCapacity(clock=clock, target_utilization=1.0, workers=1, **kw)
    cap.record(1.0 / streams, 1.0)
    return cap


def fill(cap, tenant, n, start=0):
    keys = []
    for i in range(n):
        assert cap.admit(tenant).ok, (tenant, i)
        key = f"{tenant}{start + i}"
        cap.open(key, tenant)
        cap.activity(key)
        keys.append(key)
    return keys


def test_max_min_fair_division():
    assert fair_shares({"a": 1, "b": 10}, 4) == {"a": 1.0, "b": 3.0}
    assert fair_shares({"a": 5, "b": 10}, 4) == {"a": 2.0, "b": 2.0}
    assert fair_shares({"a": 1, "b": 1, "c": 9}, 6) == {"a": 1.0, "b": 1.0, "c": 4.0}


def test_a_tenant_alone_may_use_all_of_it():
    clock = FakeClock()
    cap = pod(clock)
    fill(cap, "bob", 4)
    d = cap.admit("bob")
    assert not d.ok and d.limit == "capacity" and d.retry_after_s > 0


def test_a_newcomer_gets_its_share_while_the_other_holds_everything():
    clock = FakeClock()
    cap = pod(clock)
    bob = fill(cap, "bob", 4)
    alice = fill(cap, "alice", 2)            # admitted although the pod is full: bob is above his share of 2
    d = cap.admit("alice")                   # a third would put alice above hers
    assert not d.ok and d.limit == "fair_share" and "other tenant" in d.reason
    d = cap.admit("bob")                     # bob is over his share: refused, naming the fair share
    assert not d.ok and d.limit == "fair_share"
    # scheduling: everyone's share first; bob's two newest streams are his excess
    assert cap.in_share_keys() == set(alice) | set(bob[:2])


def test_idle_streams_need_no_capacity():
    clock = FakeClock()
    cap = pod(clock, idle_s=5.0)
    fill(cap, "bob", 4)
    clock.advance(6.0)                       # no text for 6 s, nothing playing
    assert cap.admit("alice").ok and cap.headroom() == 4.0


def test_playing_audio_keeps_a_stream_counted_until_it_has_played():
    clock = FakeClock()
    cap = pod(clock, streams=1.0)
    (key,) = fill(cap, "bob", 1)
    cap.delivered(key, 10.0)                 # 10 s of audio queued to play
    cap.end(key)
    clock.advance(6.0)
    d = cap.admit("bob")
    assert not d.ok and 3.9 < d.retry_after_s < 4.1     # it frees its share when its audio has played
    clock.advance(4.1)
    assert cap.admit("bob").ok


def test_batch_uses_only_spare_capacity_and_never_counts_as_live():
    clock = FakeClock()
    cap = pod(clock, max_batch=2)
    assert cap.admit("bob", batch=True).ok
    cap.open("j1", "bob", batch=True)
    cap.set_busy("j1", True)
    assert cap.headroom() == 4.0             # batch work is not live demand
    fill(cap, "alice", 4)
    d = cap.admit("bob", batch=True)
    assert not d.ok and d.limit == "batch"   # no spare capacity: batch waits (the gateway retries)
    assert "j1" not in cap.in_share_keys()


def test_batch_work_runs_on_an_idle_pod_whatever_its_measured_capacity():
    clock = FakeClock()
    cap = pod(clock, streams=0.5, max_batch=2)   # not even one real-time stream
    for k in ("j1", "j2"):
        assert cap.admit("alice", batch=True).ok
        cap.open(k, "alice", batch=True)
    assert not cap.admit("alice", batch=True).ok      # max_batch


def test_cost_is_measured():
    clock = FakeClock()
    cap = FairCapacity(clock=clock, target_utilization=0.5, workers=2)
    cap.record(0.3, 0.0)                     # work that made no audio yet (an acoustic step)
    cap.record(0.2, 10.0)
    assert abs(cap.cost - 0.05) < 1e-9 and abs(cap.capacity - 20.0) < 1e-9


def test_a_stream_admitted_ahead_keeps_its_place_until_it_opens_or_the_hold_runs_out():
    clock = FakeClock()
    cap = pod(clock, streams=2.0)
    assert cap.admit("alice", hold="r1").ok and cap.admit("alice", hold="r2").ok
    d = cap.admit("alice", hold="r3")              # two places held: a third caller arriving at once is refused
    assert not d.ok and d.limit == "capacity"
    assert not cap.claim("bob", "r1")              # another tenant's request id claims nothing
    assert cap.claim("alice", "r1") and not cap.claim("alice", "r1")
    cap.open("s1", "alice")
    cap.activity("s1")
    clock.advance(cap.hold_s + 0.1)                # r2 never opened (an idle caller): its place is free again
    assert cap.demand() == {"alice": 1} and cap.admit("alice").ok


def test_a_burst_of_callers_is_admitted_only_as_far_as_first_audio_can_be_given_in_time():
    clock = FakeClock()
    cap = pod(clock, streams=100.0, start_budget_s=0.2)   # plenty of real-time capacity …
    cap.start_cost = 0.05                                   # … but a first audio costs 50 ms on the one worker
    admitted = [k for k in range(8) if cap.admit("alice", hold=f"r{k}").ok]
    assert len(admitted) == 4                               # 4 × 50 ms = the 200 ms budget
    d = cap.admit("alice")
    assert not d.ok and d.limit == "capacity" and "starting" in d.reason and d.retry_after_s >= 0.2
    assert cap.claim("alice", "r0")
    cap.open("s0", "alice")
    cap.activity("s0")
    cap.delivered("s0", 1.0)                                # s0 has its first audio: it is no longer starting
    cap.record_start(0.05)
    assert cap.starting() == 3 and cap.admit("alice").ok

"""The glmtts acoustic stage's queue: playback-deadline order across streams, each stream's own order kept
(a fake clock; jobs are tuples as the engine puts them)."""
import threading

from services.decoder.engine.glmtts.acoustic_queue import AcousticQueue
from tests.fakes import FakeClock


def chunk(key, n):
    return ("chunk", key, n)


def drain(q):
    out = []
    while (job := q.pick()) is not None:
        out.append((job[1], job[2] if len(job) > 2 else job[0]))
    return out


def test_a_new_streams_first_chunk_goes_before_the_look_ahead_of_streams_already_playing():
    clock = FakeClock()
    q = AcousticQueue(clock)
    q.put(chunk("A", 0))
    assert q.pick()[1] == "A"
    q.delivered("A", 1.0)                  # A plays 1 s from t=0
    for n in (1, 2, 3):
        q.put(chunk("A", n))               # A's look-ahead, queued first
    q.put(chunk("B", 0))                   # B's first chunk, queued after it
    assert drain(q)[0] == ("B", 0)


def test_the_stream_that_runs_dry_first_goes_first_and_each_stream_keeps_its_order():
    clock = FakeClock()
    q = AcousticQueue(clock)
    for key, seconds in (("A", 3.0), ("B", 0.5)):
        q.put(chunk(key, 0))
        q.pick()
        q.delivered(key, seconds)          # A has 3 s queued to play, B 0.5 s
    for n in (1, 2):
        q.put(chunk("A", n))
    for n in (1, 2):
        q.put(chunk("B", n))
    first = q.pick()
    assert first[1:] == ("B", 1)           # B runs dry at 0.5 s, A at 3 s: B first although A queued first
    q.delivered("B", 4.0)                  # now B has 4.5 s queued, A still 3 s
    assert drain(q) == [("A", 1), ("A", 2), ("B", 2)]


def test_margins_follow_the_clock():
    clock = FakeClock()
    q = AcousticQueue(clock)
    q.put(chunk("A", 0))
    q.pick()
    q.delivered("A", 1.0)                  # A dry at t=1.0
    clock.t = 0.5
    q.put(chunk("B", 0))
    q.pick()
    q.delivered("B", 2.0)                  # B dry at t=2.5
    clock.t = 0.9
    q.put(chunk("B", 1))
    q.put(chunk("A", 1))
    assert [k for k, _ in drain(q)] == ["A", "B"]


def test_end_fail_and_drop_need_no_model_time_and_go_first():
    clock = FakeClock()
    q = AcousticQueue(clock)
    q.put(chunk("A", 0))
    q.put(("end", "B"))
    assert q.pick()[0] == "end"
    q.put(("drop", "B"))
    assert q.pick()[0] == "drop" and q.pick()[1:] == ("A", 0)


def test_stop_wakes_a_waiting_consumer():
    q = AcousticQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    q.put(None)
    t.join(10)
    assert not t.is_alive() and got == [None]

"""The FastSpeech2 engine's streaming, scheduling and alignment, on a fake model (the real networks have their own
parity tests): acoustic → durations of 4 frames per symbol × speed ratio; vocoder → each frame's value repeated."""
import numpy as np
import pytest

from services.decoder.engine.base import SegmentInput, StreamOptions, Voice, WordInput
from services.decoder.engine.fastspeech2.engine import FastSpeech2Engine, StepQueue, _Segment, _Step
from services.decoder.engine.fastspeech2.settings import FastSpeech2Settings
from services.decoder.engine.fastspeech2.symbols import to_symbols
from shared.errors import InvalidArgument, ResourceExhausted
from tests.fakes import FakeClock

HOP = 300


class FakeBaker:
    hop = HOP
    sample_rate = 24000

    def __init__(self):
        from tests.unit.decoder.fastspeech2.test_symbols import mapper

        self.symbol_to_id = mapper()["symbol_to_id"]
        self.calls = []

    def acoustic(self, ids, speed=1.0):
        self.calls.append(("acoustic", len(ids), speed))
        durations = np.full(len(ids), int(round(4 * speed)), np.int32)
        durations[-1] = 0                                   # eos
        frames = int(durations.sum())
        mel = np.repeat(np.linspace(0.1, 0.9, frames, dtype=np.float32)[:, None], 80, axis=1)
        return mel, durations

    def vocode(self, mel):
        return np.repeat(mel[:, 0], HOP)

    def vocode_chunk(self, mel, start, end, context=19):
        self.calls.append(("vocode", start, end))
        return np.repeat(mel[start:end, 0], HOP)


def segment(index, *items):
    words, pos, text = [], 0, ""
    for w, py in items:
        words.append(WordInput(w, "zh" if py else "punct", py.split() if py else [], span=(pos, pos + len(w))))
        pos += len(w)
        text += w
    return SegmentInput(index, text, text, words=words)


HELLO = segment(0, ("您好", "nin2 hao3"), ("，", ""))
LONG = segment(1, ("感谢", "gan3 xie4"), ("您的", "nin2 de5"), ("耐心", "nai4 xin1"), ("等待", "deng3 dai4"),
               ("关于", "guan1 yu2"), ("网络", "wang3 luo4"), ("问题", "wen4 ti2"), ("。", ""))


async def engine_with(**kw):
    settings = FastSpeech2Settings(**{"chunk_schedule": (10, 16), "workers": 1, **kw})
    eng = FastSpeech2Engine(settings, model=FakeBaker())
    await eng.warmup()
    return eng


async def collect(stream):
    return [c async for c in stream.chunks()]


async def run(eng, options, *segments):
    stream = eng.open_stream(Voice(), options)
    try:
        for s in segments:
            stream.feed(s)
        stream.end()
        return await collect(stream)
    finally:
        await stream.close()


async def test_segments_come_whole_in_order_and_the_first_chunk_is_short():
    eng = await engine_with()
    chunks = await run(eng, StreamOptions(), HELLO, LONG)
    assert [c.segment_index for c in chunks if c.segment_end] == [0, 1]
    # the stream's chunks follow the schedule (10, 16, 16, …), a segment's last one taking a short tail
    assert len(chunks[0].audio) == 10 * HOP and all(len(c.audio) >= 16 * HOP for c in chunks[2:-1])
    for index, seg in ((0, HELLO), (1, LONG)):
        audio = np.concatenate([c.audio for c in chunks if c.segment_index == index])
        mel, _ = eng.model.acoustic(np.zeros(len(to_symbols(seg.words)), int))
        assert np.array_equal(audio, eng.model.vocode(mel))          # chunks = the segment vocoded whole
    assert eng.stats().active_streams == 0


async def test_speed_reaches_the_model_as_a_duration_ratio():
    eng = await engine_with()
    await run(eng, StreamOptions(speed=2.0), HELLO)
    assert ("acoustic", len(to_symbols(HELLO.words)), 0.5) in eng.model.calls


async def test_alignment_gives_each_characters_time_to_the_frame():
    eng = await engine_with()
    chunks = await run(eng, StreamOptions(alignment=True), HELLO, LONG)
    offset, seen = 0, []
    for c in chunks:
        seen += [(c.segment_index, t.start, t.end, offset + t.start_sample, offset + t.end_sample, t.silent)
                 for t in c.alignment]
        for t in c.alignment:
            assert 0 <= t.start_sample < len(c.audio)                 # it starts in this chunk
        offset += len(c.audio)
    # HELLO: sil n in2 #0 h ao3 sil eos, 4 frames each: 您 = n in2 #0 (frames 4-16), 好 = h ao3, ，= sil
    assert seen[:3] == [(0, 0, 1, 4 * HOP, 16 * HOP, False), (0, 1, 2, 16 * HOP, 24 * HOP, False),
                        (0, 2, 3, 24 * HOP, 28 * HOP, True)]
    hello_len = 28 * HOP
    assert seen[3][:4] == (1, 0, 1, hello_len + 4 * HOP)
    assert [s[1] for s in seen if s[0] == 1] == list(range(15))      # every character of LONG, in order


async def test_without_alignment_no_timings_are_made():
    eng = await engine_with()
    chunks = await run(eng, StreamOptions(), HELLO)
    assert all(not c.alignment for c in chunks)


async def test_offline_renders_in_big_pieces():
    eng = await engine_with(offline_chunk_frames=500)
    chunks = await run(eng, StreamOptions(offline=True), LONG)
    assert len(chunks) == 1


async def test_a_closed_stream_frees_everything_at_once():
    eng = await engine_with(queue_chunks=1)
    stream = eng.open_stream(Voice(), StreamOptions())
    stream.feed(LONG)
    it = stream.chunks().__aiter__()
    await it.__anext__()                                  # one chunk taken; the reader stops reading
    await stream.close()
    assert eng.stats().active_streams == 0 and not eng.queue.steps and not eng.capacity.streams


async def test_a_cloned_voice_or_unknown_voice_is_refused():
    eng = await engine_with()
    with pytest.raises(InvalidArgument) as e:
        eng.open_stream(Voice(name="jm_kumo"), StreamOptions())
    assert e.value.field == "config.voice"
    with pytest.raises(InvalidArgument):
        eng.open_stream(Voice(reference_id="r1", embedding=np.zeros(4, np.float32)), StreamOptions())


async def test_admission_refuses_with_the_limit_that_applies():
    eng = await engine_with(target_utilization=1.0, min_streams=1)
    eng.capacity._work.clear()
    eng.capacity.record(0.5, 1.0)                           # measured: 2 real-time streams
    streams = [eng.open_stream(Voice(), StreamOptions(tenant="bob")) for _ in range(2)]
    for s in streams:
        s.feed(HELLO)
    with pytest.raises(ResourceExhausted) as e:
        eng.open_stream(Voice(), StreamOptions(tenant="bob"))
    assert e.value.message.startswith("capacity:") and e.value.retry_after_s > 0
    alice = eng.open_stream(Voice(), StreamOptions(tenant="alice"))       # her share, while bob holds all
    alice.feed(HELLO)
    with pytest.raises(ResourceExhausted) as e:
        eng.open_stream(Voice(), StreamOptions(tenant="bob"))
    assert e.value.message.startswith("fair_share:")
    for s in (*streams, alice):
        await s.close()


def queue_with(clock, streams):
    from services.decoder.engine.capacity import FairCapacity

    cap = FairCapacity(clock=clock, target_utilization=1.0)
    cap.record(0.5, 1.0)                                    # 2 real-time streams
    q = StepQueue(cap)
    for key, tenant, batch in streams:
        cap.open(key, tenant, batch)
        cap.activity(key)
        q.add(key, _Step("acoustic", _Segment(HELLO, to_symbols(HELLO.words))))
    return cap, q


def test_steps_go_first_audio_first_then_the_stream_that_runs_dry_first():
    clock = FakeClock()
    cap, q = queue_with(clock, [("A", "t", False), ("B", "t", False)])
    cap.delivered("A", 3.0)
    cap.delivered("B", 0.5)
    cap, q2 = cap, q
    clock.advance(0.1)
    cap.open("C", "t", False)
    q.add("C", _Step("acoustic", None))
    order = []
    while (job := q.pick(lambda k, s: True)) is not None:
        order.append(job[0])
        q.done(job[0])
    assert order == ["C", "B", "A"]


def test_a_stream_about_to_run_dry_goes_before_newcomers_already_late():
    """Many callers at once: their first-audio deadlines pass together, yet the playing stream that would run dry
    within stall_guard_s (0.2 s) is served first (A); the others by deadline (the late newcomers, then B)."""
    clock = FakeClock()
    cap, q = queue_with(clock, [("A", "t", False), ("B", "t", False)])
    cap.delivered("A", 0.4)
    cap.delivered("B", 3.0)
    for k in ("C", "D"):
        cap.open(k, "t", False)
        q.add(k, _Step("acoustic", None))
    clock.advance(0.25)             # C, D: first audio was due at 0.15; A: 0.15 s of audio left, B: 2.75 s
    order = []
    while (job := q.pick(lambda k, s: True)) is not None:
        order.append(job[0])
        q.done(job[0])
    assert order == ["A", "C", "D", "B"]


def test_batch_work_goes_before_the_look_ahead_of_live_streams_far_ahead_of_their_listeners():
    """Live readers that take audio faster than it plays would keep every worker busy forever: a live stream with
    ahead_s (3 s) of audio queued waits behind batch lines; one with less still goes first."""
    clock = FakeClock()
    cap, q = queue_with(clock, [("far", "bob", False), ("job", "bob", True), ("near", "bob", False)])
    cap.delivered("far", 3.5)
    cap.delivered("job", 0.1)
    cap.delivered("near", 2.5)
    order = []
    while (job := q.pick(lambda k, s: True)) is not None:
        order.append(job[0])
        q.done(job[0])
    assert order == ["near", "job", "far"]


def test_a_tenants_excess_and_batch_work_wait_for_everyone_elses_share():
    clock = FakeClock()
    # capacity 2: bob's 3 live streams are 1 over his share once alice (1 stream) needs hers
    cap, q = queue_with(clock, [("bob1", "bob", False), ("bob2", "bob", False), ("bob3", "bob", False),
                                ("job", "bob", True), ("alice", "alice", False)])
    for k in ("bob1", "bob2", "bob3", "job", "alice"):
        cap.delivered(k, 1.0)                               # all playing: ordered by margin, then class
    cap.delivered("bob3", -0.9)                             # bob3 would run dry first …
    order = []
    while (job := q.pick(lambda k, s: True)) is not None:
        order.append(job[0])
        q.done(job[0])
    # … but it is bob's excess: after alice and bob's share; the batch job last
    assert order[-2:] == ["bob2", "job"] or order[-2:] == ["bob3", "job"]
    assert order.index("alice") < order.index("bob3") and order[-1] == "job"


def test_a_long_segment_is_read_in_pieces_cut_at_a_pause_then_at_words():
    from services.decoder.engine.fastspeech2.engine import pieces_of

    words = LONG.words                                     # 14 syllables, one mark at the end
    assert [len(p) for p in pieces_of(words, 100)] == [len(words)]
    cuts = pieces_of(words, 6)
    assert all(sum(len(w.pinyin) for w in p) <= 6 for p in cuts) and sum(cuts, []) == words
    clause = HELLO.words + LONG.words                      # 您好， + 14 syllables: the pause after 您好 is too early
    assert [w.text for w in pieces_of(clause, 8)[0]] == ["您好", "，", "感谢", "您的", "耐心"]


async def test_pieces_of_one_segment_end_it_once():
    eng = await engine_with(max_syllables=6)
    chunks = await run(eng, StreamOptions(alignment=True), LONG)
    assert [c.segment_end for c in chunks].count(True) == 1 and chunks[-1].segment_end
    assert [t.start for c in chunks for t in c.alignment] == list(range(15))

"""glmtts's estimated character times (engine/glmtts/timing.py): the segment's audio shared between its characters
by LM text units, handed out with the chunk in which each estimated start falls, never going back, the rest at the
segment's last chunk placed by its real length."""
from services.decoder.engine.base import SegmentInput
from services.decoder.engine.glmtts.timing import SECONDS_PER_UNIT, SegmentTimer, unit_weights

RATE = 24000


def test_units_are_characters_words_and_pause_marks():
    w = unit_weights("我用iPhone，“好”")
    assert [x for x, _ in w[:2]] == [1, 1] and abs(sum(x for x, _ in w[2:8]) - 1) < 1e-9
    assert w[8] == (1.0, True)                       # ，: a pause, silent
    assert w[9][0] == 0 and w[11][0] == 0 and w[10] == (1.0, False)


def test_characters_come_with_the_chunk_their_start_falls_in_and_the_rest_at_the_end():
    seg = SegmentInput(0, "你好，世界。", "你好，世界。")
    timer = SegmentTimer(seg, RATE)
    unit = int(SECONDS_PER_UNIT * RATE)
    first = timer.chunk(unit + 10, final=False)      # 你 starts at 0, 好 at one unit: only 你 and 好 so far
    assert [t.start for t in first] == [0, 1]
    assert first[1].start_sample == unit
    rest = timer.chunk(unit, final=True)             # the segment ends much earlier than the prior said
    assert [t.start for t in rest] == [2, 3, 4, 5]
    total = 2 * unit + 10
    assert all(0 <= t.start_sample <= unit and t.end_sample <= unit for t in rest)
    starts = [t.start_sample + (unit + 10) for t in rest]
    assert starts == sorted(starts) and starts[0] >= first[1].start_sample and rest[-1].end_sample + unit + 10 == total
    assert [t.silent for t in rest] == [True, False, False, True]

"""Segment merging for glmtts (merge.py): an early first segment, later ones merged into 30-60 units."""
import pytest

from services.frontend.engine import FrontendEngine
from services.frontend.engine.merge import MergePolicy, lm_units

GLMTTS = MergePolicy(30, 60)
TEXT = "你好！他说：今天天气不错，我们去公园散步吧。公园里有很多人，有的在跑步，有的在下棋，还有的在唱歌跳舞。" \
       "我们走了一个小时，然后回家吃饭。"


@pytest.fixture(scope="module")
def engine():
    return FrontendEngine()


def test_units_as_the_official_splitter_counts_them():
    assert lm_units("你好！") == 3
    assert lm_units("hello world.") == pytest.approx(0.7 * 2 + 0.7 + 1)
    assert lm_units("") == 0


def test_a_whole_text_is_merged_from_its_start(engine):
    segs = engine.analyze(TEXT, merge=GLMTTS)
    assert len(segs) >= 2
    assert all(lm_units(s.normalized) >= 30 for s in segs[:-1])
    assert all(lm_units(s.normalized) <= 60 for s in segs)
    assert segs[0].normalized.startswith("你好！他说：今天")          # "你好！" is not its own LM call
    assert [s.index for s in segs] == list(range(len(segs)))
    assert "".join(s.text for s in segs) == TEXT
    # words and spans follow the merged text
    for s in segs:
        for w in s.words:
            assert s.normalized[w.span[0]:w.span[1]] == w.text
        assert TEXT[s.span[0]:s.span[1]] == s.text


def test_streamed_text_gets_an_early_first_segment_then_merged_ones(engine):
    stream = engine.stream(merge=GLMTTS)
    out = []
    for ch in TEXT:                                   # token by token, as from a chat model
        got = stream.push(ch)
        if got and not out:
            assert "".join(s.text for s in got) == "你好！"   # out as soon as it is complete
        out += got
    out += stream.flush()
    assert out[0].text == "你好！"
    assert all(lm_units(s.normalized) >= 30 for s in out[1:-1])
    assert "".join(s.text for s in out) == TEXT


def test_without_a_policy_segments_are_as_before(engine):
    plain = engine.analyze(TEXT)
    assert plain[0].text == "你好！"
    assert len(plain) > len(engine.analyze(TEXT, merge=GLMTTS))


def test_a_line_break_without_a_mark_ends_the_line(engine):
    (seg,) = engine.analyze("第一行\n第二行来了", merge=GLMTTS)
    assert seg.normalized == "第一行。第二行来了"


def test_english_pieces_are_joined_with_a_space(engine):
    segs = engine.analyze("The quick brown fox jumps over the lazy dog. It was ten degrees outside.", merge=GLMTTS)
    assert segs[0].normalized.startswith("The quick brown fox jumps over the lazy dog. It was")

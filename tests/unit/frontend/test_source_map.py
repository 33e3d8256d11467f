"""Segment.source_map: the normalized text mapped back to the request text, covering it in order."""
import pytest

from services.frontend.engine.merge import MergePolicy
from services.frontend.engine.sourcemap import align

from .conftest import check_source_map


def pairs(segments, text):
    """(normalized stretch, the request text it came from) of every entry, all segments in order."""
    out = []
    for seg in segments:
        check_source_map(seg)
        out += [(seg.normalized[m.normalized[0]:m.normalized[1]], text[m.source[0]:m.source[1]])
                for m in seg.source_map]
    return out


@pytest.mark.parametrize("text,stretch", [
    ("会议9:45开始", ("九点四十五分", "9:45")),
    ("气温-3℃。", ("零下三摄氏度", "-3℃")),
    ("航班CA1234已登机", ("CA幺二三四", "CA1234")),
    ("有50%的人", ("百分之五十", "50%")),
    ("价格是$100。", ("一百美元", "$100")),
    ("电话13812345678", ("幺三八幺二三四五六七八", "13812345678")),
    ("支持5G网络", ("五G", "5G")),
])
def test_a_rewritten_stretch_is_one_entry(engine, text, stretch):
    got = pairs(engine.analyze(text), text)
    assert stretch in got, got
    # everything around it is unchanged text mapped to itself
    assert all(n == s for n, s in got if (n, s) != stretch), got


def test_a_date_maps_number_by_number(engine):
    text = "今天是2026年1月13日，气温-3℃。"
    assert pairs(engine.analyze(text), text) == [
        ("今天是", "今天是"), ("二零二六", "2026"), ("年", "年"), ("一", "1"), ("月", "月"), ("十三", "13"),
        ("日，", "日，"), ("气温", "气温"), ("零下三摄氏度", "-3℃"), ("。", "。")]


def test_inline_readings_map_to_the_character_with_its_reading(engine):
    text = "我要[xie3]个字，{血液|xue4 ye4}。"
    got = pairs(engine.analyze(text, phoneme_mode=True), text)
    assert got == [("我", "我"), ("要", "要[xie3]"), ("个字，", "个字，"), ("血", "{血"), ("液", "液|xue4 ye4}"),
                   ("。", "。")]


def test_text_before_a_reading_is_normalized_and_mapped_on_its_own(engine):
    text = "9:45开会，我要[xie3]字"
    got = pairs(engine.analyze(text, phoneme_mode=True), text)
    assert ("九点四十五分", "9:45") in got and ("要", "要[xie3]") in got


def test_a_markdown_heading_mark_joins_the_first_character(engine):
    text = "## 标题"
    assert pairs(engine.analyze(text), text) == [("标题", "## 标题")]


def test_english_abbreviations_and_numbers(engine):
    text = "Dr. Smith paid $3.50 in the 1990s."
    got = pairs(engine.analyze(text, "en"), text)
    assert ("Doctor", "Dr.") in got and ("three dollars and fifty cents", "$3.50") in got
    assert ("nineteen nineties", "1990s") in got


def test_streamed_text_maps_into_the_whole_request(engine):
    text = "您好，您的验证码是482913，5分钟内有效。请于14：30前到店。"
    s = engine.stream()
    segs = []
    for i in range(0, len(text), 3):
        segs += s.push(text[i:i + 3])
    segs += s.flush()
    got = pairs(segs, text)
    assert ("四八二九幺三", "482913") in got and ("五", "5") in got and ("十四点三十分", "14：30") in got
    assert "".join(n for n, _ in got) == "".join(seg.normalized for seg in segs)


def test_merged_segments_keep_their_maps(engine):
    text = "第一行没有标点\n第二行有数字12\n第三行。"
    segs = engine.stream(merge=MergePolicy(30, 60), whole_text=True)
    merged = segs.push(text) + segs.flush()
    assert len(merged) == 1
    # the marks put at the line ends (for the LM) join the entry before them
    assert pairs(merged, text) == [("第一行没有标点。", "第一行没有标点"), ("第二行有数字", "第二行有数字"),
                                   ("十二。", "12"), ("第三行。", "第三行。")]


@pytest.mark.parametrize("src,out,expected", [
    ("abc", "abc", [(0, 3, 0, 3)]),
    ("9:45开会", "九点四十五分开会", [(0, 6, 0, 4), (6, 8, 4, 6)]),
    ("Dr. X", "Doctor X", [(0, 6, 0, 3), (6, 8, 3, 5)]),           # D, r matched by difflib: one word
    ("a  b", "a b", [(0, 1, 0, 1), (1, 2, 1, 3), (2, 3, 3, 4)]),    # a deleted space joins the entry before
    ("", "", []),
])
def test_align(src, out, expected):
    assert align(src, out) == expected

import random

import pytest

from shared.errors import InvalidArgument
from services.frontend.engine import FrontendEngine


def run(engine, pieces, **kw):
    s = engine.stream(**kw)
    emitted = []
    per_push = []
    for p in pieces:
        out = s.push(p)
        per_push.append(out)
        emitted.extend(out)
    emitted.extend(s.flush())
    return emitted, per_push


def check_spans(text, segs):
    for i, seg in enumerate(segs):
        assert seg.index == i
        a, b = seg.span
        assert text[a:b] == seg.text, (seg.span, seg.text)


def test_sentence_end_emits_immediately(engine):
    text = "你好世界。今天天气很好！我们走吧"
    segs, per_push = run(engine, list(text))
    assert per_push[4] and per_push[4][0].text == "你好世界。"
    assert [s.text for s in segs] == ["你好世界。", "今天天气很好！", "我们走吧"]
    check_spans(text, segs)


def test_first_clause_emitted_early(engine):
    s = engine.stream()
    assert s.push("好的，") and s.push("我们明天再说") == []
    rest = s.flush()
    assert [x.text for x in rest] == ["我们明天再说"]


def test_number_split_across_pieces(engine):
    text = "圆周率是3.14。"
    s = engine.stream()
    assert s.push("圆周率是3.") == []            # might continue as 3.14
    out = s.push("14。")
    assert len(out) == 1 and "三点一四" in out[0].normalized


def test_english_period_and_abbreviations(engine):
    text = "Dr. Smith arrived at 3.5 p.m. yesterday. It was late."
    segs, _ = run(engine, [text[i:i + 3] for i in range(0, len(text), 3)])
    # the first segment is short (the schedule), but never ends at an abbreviation or inside "3.5"
    assert [s.text for s in segs] == ["Dr. Smith arrived at", "3.5 p.m. yesterday.", "It was late."]
    check_spans(text, segs)


def test_thousands_comma_not_a_clause(engine):
    s = engine.stream()
    out = s.push("总价12,")
    assert out == []
    out = s.push("345元，很贵。") + s.flush()
    assert "一万二千三百四十五元" in out[0].normalized


@pytest.mark.parametrize("seed", range(6))
def test_random_piece_boundaries_same_result(engine, seed):
    text = ("我用iPhone 15打了110。今天是2026年1月13日，气温-3℃。Dr. Smith paid $3.50 for it. "
            "这是一个很长很长的句子没有标点符号但是它必须在某个地方被切开因为它超过了最大长度限制而且还在继续不停地说下去直到结束")
    rnd = random.Random(seed)
    pieces, i = [], 0
    while i < len(text):
        k = rnd.randint(1, 7)
        pieces.append(text[i:i + k])
        i += k
    segs, _ = run(engine, pieces)
    check_spans(text, segs)
    whole = engine.analyze(text)
    assert [s.normalized for s in segs] == [s.normalized for s in whole]


def test_size_limit_split_never_inside_number_or_word(engine):
    text = "we " * 5 + "supercalifragilistic 1234567 " + "word " * 30
    segs = engine.analyze(text, max_segment_chars=8)
    assert len(segs) > 2
    for s in segs:
        assert not s.text[-1].isalnum() or s.span[1] == len(text.rstrip()) or text[s.span[1]] == " "
    assert any("1234567" in s.text for s in segs)
    check_spans(text, segs)


def test_size_limit_chinese_prefers_clause_punct(engine):
    text = "这是第一部分的内容，这是第二部分的内容，这是第三部分的内容，这是第四部分"
    segs = engine.analyze(text, max_segment_chars=12)
    # after the (deliberately short) first segment, size cuts fall on clause punctuation
    assert all(s.text.endswith("，") for s in segs[1:-1]) and len(segs) >= 4
    check_spans(text, segs)


def test_size_limit_chinese_cuts_at_word_boundary(engine):
    text = "我们在中华人民共和国的首都北京的天安门广场上看升旗仪式并且拍照留念"
    segs = engine.analyze(text, max_segment_chars=10)
    assert len(segs) >= 3
    assert "".join(s.text for s in segs) == text
    assert not any(s.text.endswith("中华") for s in segs)


def test_spans_cumulative_with_whitespace_and_skips(engine):
    text = "  你好。 。。 \n Hello there!  "
    segs, _ = run(engine, ["  你好", "。 。", "。 \n Hel", "lo there!  "])
    assert [s.text for s in segs] == ["你好。", "Hello there!"]
    check_spans(text, segs)


def test_flush_mid_text_and_continue(engine):
    s = engine.stream()
    a = s.push("没有标点")
    b = s.flush()
    c = s.push("继续说")
    d = s.flush()
    assert a == [] and [x.text for x in b] == ["没有标点"] and [x.text for x in c + d] == ["继续说"]
    assert (c + d)[0].span == (4, 7) and (c + d)[0].index == 1


def test_max_text_chars():
    eng = FrontendEngine(None, max_text_chars=10)
    s = eng.stream()
    s.push("12345")
    with pytest.raises(InvalidArgument):
        s.push("678901")
    with pytest.raises(InvalidArgument):
        eng.analyze("x" * 11)


def test_bad_language(engine):
    with pytest.raises(InvalidArgument):
        engine.stream(language="fr")


def test_control_chars_cleaned(engine):
    text = "你\x00好\x07。\x85world\x1b!"
    segs = engine.analyze(text)
    cleaned = "你 好 。 world !"
    check_spans(cleaned, segs)
    assert segs[0].text == "你 好 。" and segs[1].text == "world !"

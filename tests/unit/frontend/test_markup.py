import pytest

from shared.errors import InvalidArgument

from .conftest import all_pinyin, zh_pinyin


def test_bracket_reading(engine):
    segs = engine.analyze("我要[xie3]个字", phoneme_mode=True)
    assert segs[0].normalized == "我要个字"
    assert all_pinyin(segs)[1] == "xie3"


def test_brace_word_reading(engine):
    segs = engine.analyze("他{流血|liu2 xue4}了", phoneme_mode=True)
    assert all_pinyin(segs)[1:3] == ["liu2", "xue4"]
    assert "流血" in segs[0].normalized


def test_inline_with_numbers(engine):
    segs = engine.analyze("共3{行|hang2}字", phoneme_mode=True)
    assert segs[0].normalized == "共三行字"
    assert "hang2" in all_pinyin(segs)


@pytest.mark.parametrize("text,pos", [
    ("我要[xie9]个字", 3), ("我要[xie3个字", 2), ("我要xie3]个字", 6), ("{血液|xue4}", 0),
    ("{血液 xue4 ye4}", 0), ("a[xie3]", 1), ("好[abc1]", 2),
])
def test_invalid_markup(engine, text, pos):
    with pytest.raises(InvalidArgument) as e:
        engine.analyze(text, phoneme_mode=True)
    assert e.value.field == "text"
    assert f"position {pos}" in e.value.message


def test_error_position_is_absolute_in_stream(engine):
    s = engine.stream(phoneme_mode=True)
    s.push("你好。")
    with pytest.raises(InvalidArgument) as e:
        s.push("我要[xie9]。")
    assert "position 6" in e.value.message


def test_brackets_are_text_outside_phoneme_mode(engine):
    segs = engine.analyze("我要[xie3]个字")
    assert segs and "xie3" not in all_pinyin(segs)
    assert [w.lang for w in segs[0].words if w.text in "[]"] == ["punct", "punct"]     # marks, not read


@pytest.mark.parametrize("text,message", [
    ("我[zhuang1][zhuang1]", "a second reading at position 10 for the same character"),
    ("我[" + "zhuang1" * 3 + "]", "the reading at position 1 is longer than 12 characters"),
    ("{" + "我" * 17 + "|" + "wo3 " * 17 + "}",
     "the word at position 1 is longer than 16 characters; give a reading per word"),
    ("{我|" + "x" * 30 + "}", "invalid pinyin 'xxxxxxxxxxxxxxxxxxxxxxxx'… (30 characters) at position 3"),
    ("{我|" + "wo3 " * 60 + "}", "the {word|pinyin} reading at position 0 is longer than 209 characters"),
])
def test_inline_readings_are_bounded_and_errors_quote_little(engine, text, message):
    with pytest.raises(InvalidArgument) as e:
        engine.analyze(text, phoneme_mode=True)
    assert e.value.field == "text" and e.value.description == message

import pytest

from services.frontend.engine.normalize import normalize

ZH = [
    ("今天是2026年1月13日，气温-3℃。", "今天是二零二六年一月十三日，气温零下三摄氏度。"),
    ("电话13812345678", "电话幺三八幺二三四五六七八"),
    ("¥12.5元", "十二点五元"),
    ("￥12.5", "十二点五元"),
    ("价格是$100", "价格是一百美元"),
    ("€20", "二十欧元"),
    ("共12,345.67元", "共一万二千三百四十五点六七元"),
    ("50%的人", "百分之五十的人"),
    ("3/4", "四分之三"),
    ("下午3:30开会", "下午三点三十分开会"),
    ("2026-01-13", "二零二六年一月十三日"),
    ("第1名", "第一名"),
    ("5km", "五公里"),
    ("10kg", "十千克"),
    ("25℃", "二十五摄氏度"),
    ("温度-5°C", "温度零下五摄氏度"),
    ("1990年", "一九九零年"),
    ("3-5个", "三到五个"),
    ("1+2=3", "一加二等于三"),
    ("3.14", "三点一四"),
    ("COVID-19", "COVID 十九"),
    ("12345678901234", "一二三四五六七八九零一二三四"),
    ("１２３", "一百二十三"),
]


@pytest.mark.parametrize("text,expected", ZH)
def test_zh(text, expected):
    assert normalize(text, "zh") == expected


EN = [
    ("I have $100.", "I have one hundred dollars."),
    ("It costs $3.50", "It costs three dollars and fifty cents"),
    ("Dr. Smith met Mr. Jones", "Doctor Smith met Mister Jones"),
    ("St. Louis on Main St.", "Saint Louis on Main Street"),
    ("in the 1990s", "in the nineteen nineties"),
    ("It is 25%", "It is twenty five percent"),
    ("It is -3°C", "It is minus three degrees Celsius"),
    ("the 1st of 12,345 items", "the first of twelve thousand three hundred and forty five items"),
    ("No. 5", "number five"),
    ("a & b", "a and b"),
]


@pytest.mark.parametrize("text,expected", EN)
def test_en(text, expected):
    assert normalize(text, "en") == expected


def test_number_context(engine):
    zh = engine.analyze("我有15个苹果")[0].normalized
    en = engine.analyze("I have 15 apples")[0].normalized
    assert "十五" in zh and "fifteen" in en


def test_no_digits_left(engine):
    for text in ["v2.0版本", "A4纸", "x=3", "1/0", "3.", "5G网络", "B2B", "1" * 40, "abc123def"]:
        for seg in engine.analyze(text):
            assert not any(c.isdigit() for c in seg.normalized), (text, seg.normalized)


def test_csharp():
    assert normalize("C# and F#", "en") == "C sharp and F sharp"


def test_default_dictionary_loads_clean():
    from services.frontend.engine.dictionary import load_dictionary

    d = load_dictionary("configs/G2P_replace_dict.jsonl")
    assert d.entries > 40 and not d.errors and not d.warnings

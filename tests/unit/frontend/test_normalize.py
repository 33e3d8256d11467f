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


# TN rules from the public suites' failures (issue 11): each one a general rule, tested apart from the suites
@pytest.mark.parametrize("text,expected", [
    ("-2000", "负两千"), ("差额为-2930.5元", "差额为负两千九百三十点五元"),    # a minus reads the number as without it
    ("温度-5到-3", "温度负五到负三"), ("中国1-2", "中国一比二"), ("3-5个", "三到五个"),   # ranges and scores stay
])
def test_minus_sign_reads_the_number_as_without_it(text, expected):
    assert normalize(text, "zh") == expected


@pytest.mark.parametrize("text,expected", [
    ("日期是12/2/2", "日期是一二年二月二日"), ("12.2.3", "一二年二月三日"),              # yy/m/d, yy.m.d
    ("截止12/25/2026", "截止二零二六年十二月二十五日"),                                # m/d/yyyy, day > 12
])
def test_three_part_dates(text, expected):
    assert normalize(text, "zh") == expected


@pytest.mark.parametrize("text,expected", [
    ("请升级到iOS 17.4.1", "请升级到iOS 十七点四点一"), ("v1.2.3", "v一点二点三"), ("升级到2.3.1版本", "升级到二点三点一版本"),
    ("版本号是12.2.3", "版本号是十二点二点三"), ("10.0.1", "十点零点一"),
])
def test_version_numbers(text, expected):
    assert normalize(text, "zh") == expected


def test_two_digit_year_before_a_month():
    assert normalize("98年3月入职", "zh") == "九八年三月入职"
    assert normalize("工作了15年", "zh") == "工作了十五年"          # a duration stays a number


def test_wetext_sees_only_the_pieces_around_numbers():
    from services.frontend.engine.normalize import WETEXT_CONTEXT as W
    from services.frontend.engine.normalize import wetext_spans

    text = "您好，您的订单已经发货了，预计3天内送达，请您注意查收快递，谢谢您的耐心等待"
    i = text.index("3")
    assert wetext_spans(text) == [(i - W, i + 1 + W)]
    assert wetext_spans("好的，今天2026年1月13日，下午3:30开会") == [(5 - W, 24)]   # neighbours merge


def test_no_escape_characters_from_wetext():
    assert normalize('他说"好的"，共3次', "zh") == '他说"好的"，共三次'



@pytest.mark.parametrize("text", [
    "您好，您的订单已经发货了，预计3天内送达，请您注意查收快递", "拉齐奥 2/2的比分让人意外，大家都没想到", "第2000位顾客获得了2个奖品，价值¥12.5元",
    "航班预计会延误5个小时，请您耐心等候", "5点1刻离六点就差十五分钟", "共465篇，约315万字，作者花了12年"])
def test_windows_read_like_the_whole_clause(text):
    from services.frontend.engine.normalize import _run_wetext, _wetext_windows

    assert _wetext_windows(text) == _run_wetext(text, "zh")

"""Issue 11 error classes: each case through the whole engine, on the whole text AND streamed in pieces."""
import re

import pytest

from services.frontend.engine.normalize import normalize


def _spoken(segments) -> str:
    return re.sub(r"\s+", "", "".join(s.normalized for s in segments))


def _streamed(engine, text, size):
    st = engine.stream()
    out = []
    for i in range(0, len(text), size):
        out += st.push(text[i:i + size])
    return out + st.flush()


CASES = [
    # 1. numbers never merged across a pause (here not the first clause)
    ("您好，您的验证码是482913，5分钟内有效。", "验证码是四八二九幺三，五分钟内有效"),
    ("好的，金额是1299，3天内到账。", "金额是一千二百九十九，三天内到账"),
    # 2. a time with a full-width colon (the segmenter's first-clause cut is tested by the stream work)
    ("好的，请于14：30前到店。", "请于十四点三十分前到店"),
    # 3. codes digit by digit (幺 for 1), quantities stay quantities
    ("您尾号1702的卡已冻结。", "尾号幺七零二"),
    ("您的订单号123456789已发货。", "订单号幺二三四五六七八九"),
    ("我的工号是A1023。", "工号是A幺零二三"),
    ("您乘坐的航班CA1234已开始登机。", "航班CA幺二三四"),
    ("请乘坐G7次列车。", "G七次列车"),
    ("请到T3航站楼。", "T三航站楼"),
    ("请到房间1208等候。", "房间幺二零八"),
    ("初始密码是123456。", "密码是幺二三四五六"),
    ("客服电话400-800-1234。", "幺"),
    ("本次活动共有123456789人参加。", "一亿二千三百四十五万六千七百八十九人"),
    ("前方120米右转。", "一百二十米右转"),
    ("您购买了15件商品。", "十五件商品"),
    # 4. money and discounts
    ("本次消费¥12.50。", "十二点五元"),
    ("订单金额1,299.00元。", "一千二百九十九元"),
    ("全场8.5折。", "八五折"),
    ("融资$1.5万。", "一点五万美元"),
    ("价格是A$13.5。", "十三点五澳元"),
    ("门票₩100。", "一百韩元"),
    # 5. units in a Chinese context
    ("电池容量5000mAh。", "五千毫安时"),
    ("包裹重25kg。", "二十五千克"),
    ("每份含糖1.2g。", "一点二克"),
    ("长30cm。", "三十厘米"),
    ("支持65W快充。", "六十五瓦快充"),
    ("内存128GB。", "一百二十八G"),
    ("超出部分0.1元/MB。", "零点一元每兆"),
    # 6. fractions, negatives, dates
    ("约1/3的用户已升级。", "约三分之一"),
    ("变化-1/3。", "负三分之一"),
    ("同比-98%。", "负百分之九十八"),
    ("有效期至2026年08月09日。", "二零二六年八月九日"),
    # 8. e-mail and URLs
    ("请发邮件到service@example.com。", "service艾特example点com"),
    ("详情见www.example.com/help。", "www点example点com斜杠help"),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_class_whole_text(engine, text, expected):
    assert expected in _spoken(engine.analyze(text))


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("text,expected", CASES)
def test_class_streamed(engine, text, expected, size):
    assert expected in _spoken(_streamed(engine, text, size))


def test_no_digit_left_in_any_case(engine):
    for text, _ in CASES:
        assert not any(c.isdigit() for c in _spoken(engine.analyze(text))), text


def test_time_with_full_width_colon_at_normalization_level():
    assert normalize("请于14：30前到店", "zh") == "请于十四点三十分前到店"


def test_code_merge_at_normalization_level():
    assert normalize("验证码是482913，5分钟内有效", "zh") == "验证码是四八二九幺三，五分钟内有效"


@pytest.mark.parametrize("text,expected", [("25kg", "二十五千克"), ("1.2g", "一点二克"), ("CNY 1.25", "一点二五人民币"),
                                           ("10:04am", "上午十点零四分")])
def test_latin_only_piece_read_in_chinese(engine, text, expected):
    assert _spoken(engine.analyze(text)) == expected


def test_latin_piece_inside_a_chinese_request(engine):
    segs = _streamed(engine, "请问这款充电器的功率是多少？65W。", 2)
    assert segs[-1].normalized.startswith("六十五瓦")
    # an English sentence stays English
    assert "sixty five" in " ".join(s.normalized for s in engine.analyze("The charger gives 65 watts, you see."))


# 7. context polyphones a bot says constantly: (sentence, character, occurrence, citation reading)
POLY = [
    ("订单金额为五十元", "为", 0, "wei2"), ("服务时间为早九点到晚六点", "为", 0, "wei2"), ("已升级为会员", "为", 0, "wei2"),
    ("很高兴为您服务", "为", 0, "wei4"), ("我们会为您处理", "为", 0, "wei4"),
    ("请按时还款", "还", 0, "huan2"), ("请归还图书", "还", 0, "huan2"), ("还有其他问题吗", "还", 0, "hai2"),
    ("请重新登录", "重", 0, "chong2"), ("这很重要", "重", 0, "zhong4"),
    ("银行行长", "行", 1, "hang2"), ("进行验证", "行", 0, "xing2"), ("银行行长", "长", 0, "zhang3"),
    ("通话时长较长", "长", 1, "chang2"), ("您得先登录", "得", 0, "dei3"), ("做得很好", "得", 0, "de5"),
    ("获得积分", "得", 0, "de2"), ("请填写收货地址", "地", 0, "di4"), ("耐心地等待", "地", 0, "de5"),
    ("我了解了", "了", 0, "liao3"), ("我了解了", "了", 1, "le5"), ("您别着急", "着", 0, "zhao2"), ("请稍等着", "着", 0, "zhe5"),
    ("我们都在", "都", 0, "dou1"), ("欢迎来到成都", "都", 0, "du1"), ("正在调取记录", "调", 0, "diao4"),
    ("请调整空调温度", "调", 0, "tiao2"), ("请调整空调温度", "调", 1, "tiao2"), ("您应于三日内付款", "应", 0, "ying1"),
    ("我们会尽快回应", "应", 0, "ying4"), ("今天温差很大", "差", 0, "cha1"),
]


@pytest.mark.parametrize("text,char,nth,reading", POLY)
def test_context_polyphones(engine, text, char, nth, reading):
    norm, cit = "", []
    for s in engine.analyze(text):
        for w in s.words:
            if w.lang == "zh":
                norm += w.text
                cit += w.citation
    idx = [i for i, c in enumerate(norm) if c == char][nth]
    assert cit[idx] == reading, (text, list(zip(norm, cit)))

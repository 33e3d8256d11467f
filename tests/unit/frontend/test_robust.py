import random

import pytest

from .conftest import check_readings

WEIRD = [
    "", " ", "\n\n", "。。。", "!!!???", "，", "...", "😀😀😀", "你好😀世界🎉", "مرحبا بالعالم", "שלום", "\u202eabc\u202c",
    "\x00\x01\x02", "1" * 10000, "9" * 10000 + "。", "ｆｕｌｌｗｉｄｔｈ１２３", "Ελληνικά", "Привет мир", "ﷺ", "𠀀𠀁",
    "a" * 5000, "《》【】「」", "[{|}]", "{血|xie3}", "3." * 100, "-" * 50, "$", "¥", "100%%%", "1/0", "℃",
    "e.g. i.e. etc. Mr. Dr.", "\t\t", "’'\"", "a\u0301e\u0301", "한국어 텍스트", "日本語のテキストです", "x²+y³", "½ ¼",
    "ⅫⅣ", "①②③", "〇一二", "——", "……", "#1 @user &co", "\ud800" if False else "\ufffd", "\ufeff你好",
]


@pytest.mark.parametrize("text", WEIRD)
@pytest.mark.parametrize("phoneme_mode", [False])
def test_never_crashes(engine, text, phoneme_mode):
    segs = engine.analyze(text, phoneme_mode=phoneme_mode)
    for s in segs:
        check_readings(s)
        assert text[s.span[0]:s.span[1]] == s.text


def test_never_crashes_streaming_random_unicode(engine):
    rnd = random.Random(7)
    alphabet = "你好世界一不行长重3.14,，。！？!? abcXYZ$¥%℃-:[]{}|\n\t😀\x00\u202eمر"
    for _ in range(60):
        s = engine.stream()
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 80)))
        pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
        segs = []
        for p in pieces:
            segs += s.push(p)
        segs += s.flush()
        for seg in segs:
            check_readings(seg)


SENTENCES = [
    "今天是2026年1月13日，气温-3℃。", "我用iPhone 15打了110", "Dr. Smith paid $3.50 for the GPU.",
    "他说：“你好！”然后走了。", "The café's naïve façade — really?", "价格：¥12.5元（含税）",
    "我们要学习AI和machine learning。", "1+1=2, 3×4=12", "电话：138-1234-5678", "儿子、女儿、老头儿都来了",
    "嗯，哼，呣，欸", "OK，没问题！", "COVID-19疫情", "C++ and C# are languages.",
]


@pytest.mark.parametrize("text", SENTENCES)
def test_readings_well_formed_and_nonempty(engine, text):
    segs = engine.analyze(text)
    assert segs
    for s in segs:
        check_readings(s)
        assert any(w.pinyin or w.english for w in s.words), s      # every segment says something

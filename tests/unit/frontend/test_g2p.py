import pytest

from services.frontend.engine.english import EnglishG2P

from .conftest import all_pinyin, zh_pinyin

POLYPHONES = [
    ("我去银行取钱", "银行", ["yin2", "hang2"]),
    ("他在路上行走", "行走", ["xing2", "zou3"]),
    ("请不要重复", "重复", ["chong2", "fu4"]),
    ("这很重要", "重要", ["zhong4", "yao4"]),
    ("他的血液", "血液", ["xue4", "ye4"]),
    ("孩子长大了", "长大", ["zhang3", "da4"]),
    ("测量长度", "长度", ["chang2", "du4"]),
]


@pytest.mark.parametrize("text,word,expected", POLYPHONES)
def test_polyphones_word_level(engine, text, word, expected):
    assert zh_pinyin(engine.analyze(text))[word] == expected


def test_liuxue_via_default_dictionary():
    from services.frontend.engine import FrontendEngine

    eng = FrontendEngine("configs/G2P_replace_dict.jsonl")
    assert not eng.dictionary.errors
    assert zh_pinyin(eng.analyze("他流血了"))["流血"] == ["liu2", "xie3"]
    assert zh_pinyin(eng.analyze("血液"))["血液"] == ["xue4", "ye4"]


SANDHI = [
    ("你好", ["ni2", "hao3"]),
    ("老虎", ["lao2", "hu3"]),
    ("展览馆", ["zhan2", "lan2", "guan3"]),          # 2+1: every T3 before a T3 inside the word → T2
    ("一个", ["yi2", "ge4"]),
    ("一样", ["yi2", "yang4"]),
    ("一天", ["yi4", "tian1"]),
    ("一年", ["yi4", "nian2"]),
    ("一起", ["yi4", "qi3"]),
    ("不对", ["bu2", "dui4"]),
    ("不是", ["bu2", "shi4"]),
    ("不好", ["bu4", "hao3"]),
    ("不来", ["bu4", "lai2"]),
    ("是不是", ["shi4", "bu5", "shi4"]),
    ("看一看", ["kan4", "yi5", "kan4"]),
    ("第一", ["di4", "yi1"]),
    ("统一", ["tong3", "yi1"]),
    ("十一", ["shi2", "yi1"]),
    ("一月", ["yi1", "yue4"]),
    ("我很好", ["wo3", "hen2", "hao3"]),            # across words: right to left on surface tones
]


@pytest.mark.parametrize("text,expected", SANDHI)
def test_tone_sandhi_surface_pinyin(engine, text, expected):
    assert all_pinyin(engine.analyze(text)) == expected


def test_year_digits_keep_yi1(engine):
    p = all_pinyin(engine.analyze("1990年"))
    assert p[0] == "yi1" and p[-1] == "nian2"


def test_neutral_tone_is_5(engine):
    assert all_pinyin(engine.analyze("我们的"))[-2:] == ["men5", "de5"]


def test_mixed_zh_en_spans(engine):
    segs = engine.analyze("我用iPhone 15打了110")
    assert len(segs) == 1
    s = segs[0]
    assert [lang for lang, _, _ in s.languages] == ["zh", "en", "zh"]
    en = [w for w in s.words if w.lang == "en"]
    assert [w.text for w in en] == ["iPhone"]
    for lang, a, b in s.languages:
        assert a < b <= len(s.normalized)
    assert "十五" in s.normalized and "幺幺零" in s.normalized
    for w in s.words:
        assert s.normalized[w.span[0]:w.span[1]] == w.text


def pieces(word, zh=False):
    return [(p.text, p.arpabet, p.spelled) for p in EnglishG2P().word(word, zh=zh)]


@pytest.mark.parametrize("word,expected", [
    ("GPU", [("G", "JH IY1", True), ("P", "P IY1", True), ("U", "Y UW1", True)]),     # an acronym: spelled
    ("hello", [("hello", "HH AH0 L OW1", False)]),                                     # CMUdict
    ("NASA", [("NASA", "N AE1 S AH0", False)]),                 # a capitalized word CMUdict knows is a word
    ("a", [("a", "AH0", False)]),                               # the article
    ("A", [("A", "EY1", True)]),                                # a letter
    ("macOS", [("mac", "M AE1 K", False), ("O", "OW1", True), ("S", "EH1 S", True)]),   # the tech lexicon
    ("ChatGPT", [("Chat", "CH AE1 T", False), ("G", "JH IY1", True), ("P", "P IY1", True),   # camelCase, its
                 ("T", "T IY1", True)]),                                                    # acronym spelled
    ("bookshelfwise", [("bookshelf", "B UH1 K SH EH2 L F", False), ("wise", "W AY1 Z", False)]),   # a compound
])
def test_english_words_in_arpabet_pieces(word, expected):
    assert pieces(word) == expected


def test_unknown_english_word_reads_by_letter_to_sound_in_arpabet():
    from .conftest import is_arpabet

    (p,) = EnglishG2P().word("blorptastic")                  # no CMUdict entry, no known parts
    assert p.text == "blorptastic" and is_arpabet(p.arpabet) and not p.spelled
    assert p.arpabet.split()[:3] == ["B", "L", "AO1"]        # the first vowel stressed ("or" → AO R)
    assert p.arpabet.count("1") == 1                          # ... and only it
    assert [x.spelled for x in EnglishG2P().word("Zxqw")] == [True] * 4   # no vowels: spelled


@pytest.mark.parametrize("text,citation,spoken", [
    ("你好", ["ni3", "hao3"], ["ni2", "hao3"]),
    ("展览馆", ["zhan3", "lan3", "guan3"], ["zhan2", "lan2", "guan3"]),
    ("不对", ["bu4", "dui4"], ["bu2", "dui4"]),
    ("一起", ["yi1", "qi3"], ["yi4", "qi3"]),
    ("看一看", ["kan4", "yi1", "kan4"], ["kan4", "yi5", "kan4"]),
])
def test_citation_and_spoken_tones(engine, text, citation, spoken):
    words = [w for s in engine.analyze(text) for w in s.words if w.lang == "zh"]
    assert [p for w in words for p in w.citation] == citation
    assert [p for w in words for p in w.pinyin] == spoken


def test_dictionary_and_inline_readings_win_over_the_disambiguator(tmp_path):
    import json

    from services.frontend.engine import FrontendEngine

    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"word": "还款", "pinyin": "hai2 kuan3"}, ensure_ascii=False) + "\n"
                 + json.dumps({"char": "为", "pinyin": "wei2", "context": "为您"}, ensure_ascii=False) + "\n",
                 encoding="utf-8")
    eng = FrontendEngine(str(p))
    cit = [x for s in eng.analyze("请为您的贷款按时还款") for w in s.words for x in w.citation]
    assert cit[1] == "wei2" and cit[-2] == "hai2"
    plain = FrontendEngine(None)
    cit = [x for s in plain.analyze("请为您的贷款按时还款") for w in s.words for x in w.citation]
    assert cit[1] == "wei4" and cit[-2] == "huan2"
    cit = [x for s in plain.analyze("请为[wei2]您按时还[hai2]款", phoneme_mode=True) for w in s.words for x in w.citation]
    assert cit[1] == "wei2" and cit[-2] == "hai2"

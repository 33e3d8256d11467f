"""Erhua: which 儿 r-colours the syllable before it ("r5" in pinyin and citation_pinyin) and which is a syllable."""
import pytest

from shared.pinyin import ERHUA


def er_readings(engine, text):
    """(spoken, citation) reading of each 儿 of ``text``."""
    out = []
    for seg in engine.analyze(text):
        for w in seg.words:
            for c, p, q in zip(w.text, w.pinyin, w.citation):
                if c == "儿":
                    out.append((p, q))
    return out


@pytest.mark.parametrize("text", ["你去那儿吧", "等一会儿再说", "我们出去玩儿", "我一点儿也不累", "放这儿就行", "你去哪儿了",
                                  "小孩儿在哭", "有事儿找我", "哥儿们来了", "等一下儿", "今儿个真热", "花儿开了"])
def test_erhua(engine, text):
    assert er_readings(engine, text) == [(ERHUA, ERHUA)]


@pytest.mark.parametrize("text", ["我女儿很乖", "他有两个儿子", "婴儿车在这儿", "送到幼儿园", "她是孤儿", "体育健儿们",
                                  "六一儿童节", "男儿有泪不轻弹", "我的儿啊", "小孩儿女儿都来了", "儿"])
def test_full_syllable(engine, text):
    readings = er_readings(engine, text)
    full = [p for p in readings if p != (ERHUA, ERHUA)]
    assert full and all(p == "er2" and q == "er2" for p, q in full), readings
    # the one erhua among them: 婴儿车在这儿, 小孩儿女儿
    assert len(readings) - len(full) == {"婴儿车在这儿": 1, "小孩儿女儿都来了": 1}.get(text, 0), readings


def test_tone_sandhi_sees_erhua_as_neutral(engine):
    """一 before 会儿 is yi2 (before a tone 4), 有点儿 keeps its 3-3 sandhi; 儿 itself carries no tone."""
    words = {w.text: w.pinyin for s in engine.analyze("有点儿累，等一会儿") for w in s.words if w.lang == "zh"}
    assert words["有点儿"] == ["you2", "dian3", ERHUA] and words["一会儿"] == ["yi2", "hui4", ERHUA]


def test_dictionary_and_inline_readings_are_kept(engine):
    """A reading given for 儿 (phoneme mode, the replace dictionary) is taken as given: no rule applies to it."""
    assert er_readings(engine, "你去那儿吧") == [(ERHUA, ERHUA)]
    segs = engine.analyze("你去那儿[er2]吧", phoneme_mode=True)
    assert [p for s in segs for w in s.words for c, p in zip(w.text, w.pinyin) if c == "儿"] == ["er2"]

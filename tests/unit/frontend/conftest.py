import pytest

from services.frontend.engine import FrontendEngine


@pytest.fixture(scope="session")
def engine():
    eng = FrontendEngine(None)
    eng.warmup()
    return eng


def zh_pinyin(segments):
    return {w.text: w.pinyin for s in segments for w in s.words if w.lang == "zh"}


def all_pinyin(segments):
    return [p for s in segments for w in s.words for p in w.pinyin]


ARPABET_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
ARPABET_CONSONANTS = {"B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
                      "TH", "V", "W", "Y", "Z", "ZH"}


def is_arpabet(phones: str) -> bool:
    """CMUdict phones: vowels with a stress digit, consonants without."""
    return bool(phones) and all(p in ARPABET_CONSONANTS or p[:-1] in ARPABET_VOWELS and p[-1] in "012"
                                for p in phones.split())


def check_readings(seg) -> None:
    """The engine-neutral readings of a segment are well formed: pinyin with tone digits (or the erhua r5), one
    citation syllable per spoken one; English pieces in ARPAbet covering the word's letters; spans into normalized;
    the source map covers normalized in order, inside the segment's span."""
    from services.frontend.engine.english import strip_accents
    from shared.pinyin import ERHUA, is_valid_syllable

    for w in seg.words:
        assert seg.normalized[w.span[0]:w.span[1]] == w.text
        if w.lang == "zh":
            assert len(w.pinyin) == len(w.citation)
            assert all(p == ERHUA or is_valid_syllable(p) for p in w.pinyin + w.citation), w
        if w.lang == "en":
            assert all(is_arpabet(p.arpabet) for p in w.english), w
            def letters(t):
                return "".join(c for c in strip_accents(t) if c.isascii() and c.isalpha())
            assert "".join(letters(p.text) for p in w.english) in (letters(w.text), ""), w
    check_source_map(seg)


def check_source_map(seg) -> None:
    pos, src = 0, seg.span[0]
    for m in seg.source_map:
        assert m.normalized[0] == pos < m.normalized[1], seg          # contiguous, in order, never empty
        assert src <= m.source[0] <= m.source[1] <= seg.span[1], seg  # in order, inside the segment
        pos, src = m.normalized[1], m.source[1]
    assert pos == len(seg.normalized), seg

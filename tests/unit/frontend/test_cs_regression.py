"""Customer-service regression suite (tests/data/cs_regression.tsv): every reading of >= 100 replies, 0 wrong.

Each sentence goes through the whole engine (segmentation, normalization, G2P) and must give exactly the expected
normalized text and the expected citation pinyin of every Chinese character. A failure prints the first differing
character, so a wrong reading is found at once.
"""
import os

import pytest

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data", "cs_regression.tsv")


def _cases():
    out = []
    with open(DATA, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            text, norm, pinyin = line.rstrip("\n").split("\t")
            out.append((text, norm, pinyin.split()))
    return out


CASES = _cases()


def test_suite_size():
    assert len(CASES) >= 100


@pytest.mark.parametrize("text,norm,pinyin", CASES, ids=[c[0][:12] for c in CASES])
def test_reading(engine, text, norm, pinyin):
    segs = engine.analyze(text)
    assert "".join(s.normalized for s in segs).replace(" ", "") == norm
    chars = "".join(w.text for s in segs for w in s.words if w.lang == "zh")
    got = [p for s in segs for w in s.words if w.lang == "zh" for p in w.citation]
    assert len(chars) == len(pinyin), (chars, got)
    for i, (c, g, e) in enumerate(zip(chars, got, pinyin)):
        assert g == e, f"{text}: character {i} {c!r} read {g}, expected {e}"

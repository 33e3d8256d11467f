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

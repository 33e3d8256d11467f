"""Moving Kokoro's symbols out of the frontend changed no audio except on purpose.

``tests/data/kokoro_phonemes_1c405d6.jsonl`` holds the phoneme strings the frontend computed for 318 texts (from the
tests: the customer-service replies, the TN, readings, polyphone, robustness and schedule tables, English and mixed
sentences, and texts with erhua and tech words) at commit 1c405d6, the last one where it did. The same texts go
through today's frontend, the protos (the wire contract) and the Kokoro engine's phonemes.py: every string must be
the same, except the deliberate reading changes listed in DELIBERATE, which must be exactly those.
"""
import json
from pathlib import Path

import pytest

from services.decoder.engine.kokoro.phonemes import segment_phonemes
from services.decoder.server import segment_from_proto
from services.frontend.engine import FrontendEngine
from services.frontend.server import segment_to_proto

DATA = Path(__file__).resolve().parents[3] / "data" / "kokoro_phonemes_1c405d6.jsonl"

ERHUA = "erhua 儿: the r-colouring of the syllable before it, no syllable of its own"
EP = "tech lexicon: App/APP in a Chinese sentence is 'ep'"
WIFI = "tech lexicon: Wi-Fi is one word, 'wai-fai' (was 'wih' + 'fai')"
# (text, language) → the (before, after) replacements that turn the old strings into the new ones, and why
DELIBERATE = {
    ("APP更新后就可以正常使用了。", ""): ([("ˈA pˈi pˈi", "ˈɛp")], EP),
    ("您的会员积分还有12,345分，可以在App里兑换iPhone 15的优惠券，有效期到2026-03-31为止。", ""): ([("ˈæp", "ˈɛp")], EP),
    ("请打开WiFi，然后下载App。", ""): ([("ˈæp", "ˈɛp")], EP),
    ("请打开APP，点击OK。", ""): ([("ˈA pˈi pˈi", "ˈɛp")], EP),
    ("Bluetooth and Wi-Fi are on.", ""): ([("wˈɪ fˈI", "wˈIfˌI")], WIFI),
    ("Bluetooth and Wi-Fi are on.", "en"): ([("wˈɪ fˈI", "wˈIfˌI")], WIFI),
    ("请连接Wi-Fi后再试。", ""): ([("wˈɪ fˈI", "wˈIfˌI")], WIFI),
    ("Type-C接口", ""): ([("tˈIp sˈi", "tˈIpsˈi")], "tech lexicon: Type-C is one word (type + the letter C)"),
    ("儿子、女儿、老头儿都来了", ""): ([("lau↓tʰouɚ↗", "lau↓tʰouɻ")], ERHUA),
    ("一会儿就好。", ""): ([("i↗xwei↘ɚ↗", "i↗xwə↘ɻ")], ERHUA),
    ("你去哪儿了？", ""): ([("na↓ɚ↗", "na↓ɻ")], ERHUA),
    ("我在这儿等你。", ""): ([("ꭧɤ↘ɚ↗", "ꭧɤ↘ɻ")], ERHUA),
    ("小孩儿在玩儿。", ""): ([("ɕjau↓xai↗ɚ↗", "ɕjau↓xa↗ɻ"), ("wa↗nɚ↗", "wa↗ɻ")], ERHUA),
    ("一点儿也不累。", ""): ([("i↘tjɛ↓nɚ↗", "i↘tja↓ɻ")], ERHUA),
    ("那儿有个婴儿。", ""): ([("na↘ɚ↗", "na↘ɻ")], ERHUA),       # 婴儿 keeps its full 儿 (i→ŋɚ↗)
}


def records():
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def frontend():
    eng = FrontendEngine(None)
    eng.warmup()
    return eng


def kokoro_strings(frontend, text: str, language: str) -> tuple[list[str], list[str]]:
    segments = frontend.analyze(text, language=language)
    return ([segment_phonemes(segment_from_proto(segment_to_proto(s))) for s in segments],
            [s.normalized for s in segments])


def test_the_recording_holds_the_listed_sentences():
    keys = {(r["text"], r["language"]) for r in records()}
    assert len(keys) == len(records()) >= 300
    assert set(DELIBERATE) <= keys


def test_every_phoneme_string_is_as_before_except_the_deliberate_changes(frontend):
    changed, wrong = set(), []
    for rec in records():
        key = (rec["text"], rec["language"])
        now, normalized = kokoro_strings(frontend, *key)
        assert normalized == [s["normalized"] for s in rec["segments"]], key      # the same segments
        expected = [s["phonemes"] for s in rec["segments"]]
        for before, after in DELIBERATE.get(key, ([], ""))[0]:
            joined = "\n".join(expected)
            assert before in joined, (key, before)
            expected = joined.replace(before, after).split("\n")
        if now != expected:
            wrong.append((key, now, expected))
        if now != [s["phonemes"] for s in rec["segments"]]:
            changed.add(key)
    assert not wrong, wrong
    assert changed == set(DELIBERATE)

"""The tech lexicon: English words of Chinese service text read as people say them, however they are written."""
import pytest

from services.frontend.engine.english import EnglishG2P
from services.frontend.engine.tech_words import TECH_WORDS, ZH_ONLY, lexicon_entry


def english(engine, text, language=""):
    """(word, [(piece, arpabet, spelled)]) of each English word of ``text``."""
    return [(w.text, [(p.text, p.arpabet, p.spelled) for p in w.english])
            for s in engine.analyze(text, language=language) for w in s.words if w.lang == "en"]


@pytest.mark.parametrize("written", ["Wi-Fi", "WiFi", "wifi", "WIFI", "wi-fi"])
def test_wifi_is_wai_fai_however_written(engine, written):
    (word, pieces), = english(engine, f"请连接{written}后再试。")
    assert word == written                                    # one word, the hyphen inside it
    assert [a for _, a, _ in pieces] == ["W AY1", "F AY2"]    # "wai-fai", not letter-to-sound "wih"
    assert "".join(t for t, _, _ in pieces) == written.replace("-", "")


def test_wifi_in_an_english_sentence_too(engine):
    (_, pieces), = english(engine, "Is the Wi-Fi on?", "en")[2:3]
    assert [a for _, a, _ in pieces] == ["W AY1", "F AY2"]


@pytest.mark.parametrize("text,word,expected", [
    ("请下载App。", "App", [("App", "EH1 P", False)]),                              # "ep"
    ("请下载APP。", "APP", [("APP", "EH1 P", False)]),                              # not A-P-P
    ("升级到iOS最新版", "iOS", [("i", "AY1", True), ("O", "OW1", True), ("S", "EH1 S", True)]),   # I-O-S
    ("我用iPhone", "iPhone", [("i", "AY1", True), ("Phone", "F OW2 N", False)]),
    ("我用iPad", "iPad", [("i", "AY1", True), ("Pad", "P AE2 D", False)]),
    ("插上USB", "USB", [("U", "Y UW1", True), ("S", "EH1 S", True), ("B", "B IY1", True)]),
    ("发个PDF", "PDF", [("P", "P IY1", True), ("D", "D IY1", True), ("F", "EH1 F", True)]),
    ("您的ID", "ID", [("I", "AY1", True), ("D", "D IY1", True)]),
    ("好的OK", "OK", [("O", "OW1", True), ("K", "K EY1", True)]),
    ("安卓Android", "Android", [("Android", "AE1 N D R OY2 D", False)]),
    ("打开Bluetooth", "Bluetooth", [("Blue", "B L UW1", False), ("tooth", "T UW2 TH", False)]),
    ("发email给我", "email", [("e", "IY0", False), ("mail", "M EY1 L", False)]),
    ("发e-mail给我", "e-mail", [("e", "IY0", False), ("mail", "M EY1 L", False)]),
    ("Type-C接口", "Type-C", [("Type", "T AY1 P", False), ("C", "S IY1", True)]),
])
def test_tech_words_in_chinese_text(engine, text, word, expected):
    assert (word, expected) in english(engine, text)


def test_5g_is_read_five_and_the_letter(engine):
    seg, = engine.analyze("支持5G网络")
    assert seg.normalized == "支持五G网络"                        # what TN makes of it
    assert english(engine, "支持5G网络") == [("G", [("G", "JH IY1", True)])]


def test_app_in_an_english_sentence_is_cmudicts(engine):
    assert english(engine, "Download the app.", "en")[2] == ("app", [("app", "AE1 P", False)])


def test_a_hyphenated_word_the_lexicon_does_not_know_stays_words_and_a_hyphen(engine):
    seg, = engine.analyze("a well-known Wi-Fi-ready café", "en")
    assert [(w.text, w.lang) for w in seg.words] == [
        ("a", "en"), ("well", "en"), ("-", "punct"), ("known", "en"), ("Wi-Fi", "en"), ("-", "punct"),
        ("ready", "en"), ("café", "en")]


@pytest.mark.parametrize("key", sorted(TECH_WORDS) + sorted(ZH_ONLY))
def test_every_entry_covers_its_letters(key):
    """Each entry's letter counts add up to the word (a wrong count would silently fall back to the rules)."""
    pieces = lexicon_entry(key, zh=True)
    assert pieces is not None and "".join(t for t, _, _ in pieces) == key
    assert all(p.arpabet for p in EnglishG2P().word(key, zh=True))

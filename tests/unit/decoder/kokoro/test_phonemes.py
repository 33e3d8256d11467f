"""The Kokoro engine's symbols from the frontend's engine-neutral readings (engine/kokoro/phonemes.py)."""
import json

import pytest

from services.decoder.engine.base import Pronunciation, SegmentInput, WordInput
from services.decoder.engine.kokoro.phonemes import (KOKORO_VOCAB, arpabet_to_misaki, english, mandarin,
                                                     segment_phonemes, syllable)
from shared.pinyin import valid_bases

# worked out by hand from the pinyin-to-ipa tables + misaki's tone arrows
CASES = [
    ("zhong1", "ꭧʊ→ŋ"), ("ni3", "ni↓"), ("hao3", "xau↓"), ("shi4", "ʂɨ↘"), ("zi5", "ʦɨ"), ("ci2", "ʦʰɨ↗"),
    ("ri4", "ɻɨ↘"), ("er4", "ɚ↘"), ("lv4", "ly↘"), ("lü4", "ly↘"), ("jue2", "ʨɥe↗"), ("xiong2", "ɕjʊ↗ŋ"),
    ("you3", "jou↓"), ("liu2", "ljou↗"), ("wei4", "wei↘"), ("dui4", "twei↘"), ("wen2", "wə↗n"), ("lun2", "lwə↗n"),
    ("yuan2", "ɥɛ↗n"), ("qu4", "ʨʰy↘"), ("xie3", "ɕje↓"), ("tian1", "tʰjɛ→n"), ("chang2", "ꭧʰa↗ŋ"),
    ("ge5", "kɤ"), ("bo1", "pwo→"), ("n2", "n↗"), ("hng5", "hŋ"), ("yun4", "y↘n"), ("jun1", "ʨy→n"),
    ("zhe4", "ꭧɤ↘"), ("cai2", "ʦʰai↗"), ("pao3", "pʰau↓"), ("kuang4", "kʰwa↘ŋ"), ("ying1", "i→ŋ"),
]


@pytest.mark.parametrize("syl,expected", CASES)
def test_syllable(syl, expected):
    assert syllable(syl) == expected


def test_every_known_syllable_maps_in_vocab():
    for base in valid_bases():
        for tone in "12345":
            for erhua in (False, True):
                ps = syllable(base + tone, erhua)
                assert ps and set(ps) <= KOKORO_VOCAB, (base, ps)


def test_bad_syllable_raises():
    with pytest.raises(ValueError):
        syllable("qqq1")
    with pytest.raises(ValueError):
        syllable("r5")             # erhua is no syllable of its own


def test_vocabulary_is_the_models():
    from services.decoder.engine.kokoro.model import _data

    vocab = json.loads((_data() / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    assert KOKORO_VOCAB == set(vocab) - {"$"}          # "$" is the model's pad/boundary token, never a phoneme


@pytest.mark.parametrize("pinyin,expected", [
    (["na4", "r5"], "na↘ɻ"),                        # 那儿: r-colouring after the nucleus, no syllable of its own
    (["wan2", "r5"], "wa↗ɻ"),                       # 玩儿: the coda n goes
    (["yi2", "hui4", "r5"], "i↗xwə↘ɻ"),             # 一会儿: so does the glide of ei
    (["yi4", "dian3", "r5"], "i↘tja↓ɻ"),            # 一点儿
    (["xiao3", "hai2", "r5"], "ɕjau↓xa↗ɻ"),         # 小孩儿
    (["shi4", "r5"], "ʂɚ↘"),                        # 事儿: the apical vowel becomes ɚ
    (["yang4", "r5"], "ja↘ŋɻ"),                     # 样儿
    (["nv3", "er2"], "ny↓ɚ↗"),                      # 女儿: a full syllable
])
def test_erhua_colours_the_syllable_before_it(pinyin, expected):
    assert mandarin(pinyin) == expected


def test_erhua_word_after_a_word_colours_its_last_syllable():
    """jieba may leave 儿 a word of its own (一下 | 儿): it still joins the syllable before it, across the space."""
    seg = SegmentInput(0, "等一下儿。", "等一下儿。", words=[
        WordInput("等", "zh", ["deng3"], (0, 1)), WordInput("一下", "zh", ["yi2", "xia4"], (1, 3)),
        WordInput("儿", "zh", ["r5"], (3, 4)), WordInput("。", "punct", [], (4, 5))])
    assert segment_phonemes(seg) == "tə↓ŋ i↗ɕja↘ɻ."


@pytest.mark.parametrize("arpa,expected", [
    (["HH", "AH0", "L", "OW1"], "həlˈO"),
    (["W", "ER1", "L", "D"], "wˈɜɹld"),
    (["B", "AY1"], "bˈI"),
    (["JH", "AH1", "JH"], "ʤˈʌʤ"),
    (["CH", "EY1", "N", "JH"], "ʧˈAnʤ"),
    (["T", "IY1", "CH", "ER0"], "tˈiʧəɹ"),
    (["B", "OY1"], "bˈY"),
    (["N", "AW1"], "nˈW"),
    (["G", "OW1"], "ɡˈO"),
])
def test_arpabet_mapping(arpa, expected):
    assert arpabet_to_misaki(arpa) == expected


@pytest.mark.parametrize("pieces,expected", [
    ([("G", "JH IY1", True), ("P", "P IY1", True), ("U", "Y UW1", True)], "ʤˈi pˈi jˈu"),   # spelled: spaced
    ([("i", "AY1", True), ("Phone", "F OW2 N", False)], "ˈIfˌOn"),                         # parts of a word: joined
    ([("W", "D AH1 B AH0 L Y UW0", True)], "dˈʌbᵊlju"),                                    # misaki's letter names
    ([("a", "AH0", False)], "ɐ"),                                                          # the article
    ([("Wi", "W AY1", False), ("Fi", "F AY2", False)], "wˈIfˌI"),
])
def test_english_pieces(pieces, expected):
    assert english([Pronunciation(*p) for p in pieces]) == expected


def test_segment_format_marks_stick_to_the_word_before():
    seg = SegmentInput(0, "你好，“世界”！", "你好，“世界”！", words=[
        WordInput("你好", "zh", ["ni2", "hao3"], (0, 2)), WordInput("，", "punct", [], (2, 3)),
        WordInput("“", "punct", [], (3, 4)), WordInput("世界", "zh", ["shi4", "jie4"], (4, 6)),
        WordInput("”", "punct", [], (6, 7)), WordInput("！", "punct", [], (7, 8)),
        WordInput("😀", "other", [], (8, 9))])
    assert segment_phonemes(seg) == "ni↗xau↓, “ʂɨ↘ʨje↘”!"


def test_spoken_tones_not_citation_tones_are_spoken():
    """The engine speaks ``pinyin`` (after sandhi), never ``citation`` (for the LM engines)."""
    w = WordInput("你好", "zh", ["ni2", "hao3"], (0, 2), citation=["ni3", "hao3"])
    assert segment_phonemes(SegmentInput(0, "你好", "你好", words=[w])) == "ni↗xau↓"

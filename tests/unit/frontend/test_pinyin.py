import pytest

from services.frontend.engine.pinyin import is_valid_syllable, pinyin_syllable_to_kokoro, valid_bases

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
def test_syllable_to_kokoro(syl, expected):
    assert pinyin_syllable_to_kokoro(syl) == expected


@pytest.mark.parametrize("syl,ok", [("xie3", True), ("lv4", True), ("zhong1", True), ("xie6", False), ("xie", False),
                                    ("abc3", False), ("", False), ("3", False), ("bing5", True), ("fo2", True),
                                    ("xo1", False), ("zhi1", True), ("xian7", False)])
def test_valid_syllable(syl, ok):
    assert is_valid_syllable(syl) is ok


def test_every_known_syllable_maps_in_vocab():
    from services.frontend.engine.vocab import KOKORO_VOCAB

    for base in valid_bases():
        for tone in "12345":
            ps = pinyin_syllable_to_kokoro(base + tone)
            assert ps and set(ps) <= KOKORO_VOCAB, (base, ps)


def test_bad_syllable_raises():
    with pytest.raises(ValueError):
        pinyin_syllable_to_kokoro("qqq1")

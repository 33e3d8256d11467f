"""Pinyin → the LM's phoneme tokens, and the segment text the glmtts LM reads."""
import pytest
from pypinyin.constants import PINYIN_DICT
from pypinyin.contrib.tone_convert import to_tone3

from services.decoder.engine.base import WordInput
from services.decoder.engine.glmtts.phonemes import all_tokens, default_reading, lm_text, syllable_tokens


@pytest.mark.parametrize("syllable, tokens", [
    ("hang2", ["<|H|>", "<|ANG2|>"]),
    ("cui1", ["<|C|>", "<|UEI1|>"]),          # as in the published replace dictionary (衰)
    ("xian2", ["<|X|>", "<|IAN2|>"]),         # 弦
    ("yi4", ["<|I4|>"]),                      # 弈: zero initial
    ("zhi1", ["<|ZH|>", "<|III1|>"]),
    ("zi3", ["<|Z|>", "<|II3|>"]),
    ("yu2", ["<|V2|>"]),
    ("xue2", ["<|X|>", "<|VE2|>"]),
    ("lv4", ["<|L|>", "<|V4|>"]),
    ("you3", ["<|IOU3|>"]),
    ("wen2", ["<|UEN2|>"]),
    ("yo1", ["<|IO1|>"]),
    ("de5", ["<|D|>", "<|E5|>"]),
])
def test_syllables_split_into_initial_and_toned_final(syllable, tokens):
    assert syllable_tokens(syllable) == tokens


@pytest.mark.parametrize("syllable", ["hm5", "ng2", "", "hang", "hang7"])
def test_syllables_without_a_final_or_tone_have_no_tokens(syllable):
    assert syllable_tokens(syllable) is None


def test_every_reading_in_pypinyin_maps_into_the_inventory():
    inventory = set(all_tokens())
    readings = {to_tone3(r, neutral_tone_with_five=True) for v in PINYIN_DICT.values() for r in v.split(",")}
    mapped = [syllable_tokens(r) for r in readings]
    assert sum(m is not None for m in mapped) > 1200
    missing = {t for m in mapped if m for t in m} - inventory
    assert not missing


def test_characters_read_other_than_their_most_common_reading_become_phonemes():
    assert default_reading("行") == "xing2" and default_reading("你") == "ni3" and default_reading("A") == ""
    words = [WordInput("他", "zh", ["ta1"], span=(0, 1)), WordInput("在", "zh", ["zai4"], span=(1, 2)),
             WordInput("银行", "zh", ["yin2", "hang2"], span=(2, 4)), WordInput("，", "punct", span=(4, 5)),
             WordInput("行不行", "zh", ["xing2", "bu4", "xing2"], span=(5, 8)), WordInput("OK", "en", span=(9, 11))]
    assert lm_text("他在银行，行不行 OK", words) == \
        "他在银<|H|><|ANG2|>，行不行 OK"
    sandhi = [WordInput("一个", "zh", ["yi2", "ge4"], span=(0, 2))]
    assert lm_text("一个", sandhi) == "<|I2|>个"


def test_words_that_do_not_line_up_are_left_as_text():
    words = [WordInput("银行", "zh", ["yin2"], span=(0, 2))]        # pinyin count differs: keep the characters
    assert lm_text("银行", words) == "银行"
    assert lm_text("银行", [WordInput("银行", "zh", ["yin2", "hang2"])]) == "银行"     # no span

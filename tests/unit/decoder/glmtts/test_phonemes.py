"""Pinyin → the LM's phoneme tokens (the rule for which characters get them: test_lm_text.py)."""
import pytest
from pypinyin.constants import PINYIN_DICT
from pypinyin.contrib.tone_convert import to_tone3

from services.decoder.engine.glmtts.phonemes import all_tokens, default_reading, syllable_tokens


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


def test_the_inventory_is_the_published_one_and_most_readings_fall_in_it():
    inventory = set(all_tokens())
    assert len(inventory) == 204 and "<|ANG2|>" in inventory and "<|ZH|>" in inventory
    readings = {to_tone3(r, neutral_tone_with_five=True) for v in PINYIN_DICT.values() for r in v.split(",")}
    mapped = [syllable_tokens(r) for r in readings]
    inside = [m for m in mapped if m and all(t in inventory for t in m)]
    assert len(inside) > 1200
    # the finals the published model never saw (its G2P does not emit them): such readings keep the character
    outside = {t for m in mapped if m for t in m} - inventory
    assert {"<|ER5|>", "<|UAI5|>"} <= outside


def test_default_reading():
    assert default_reading("行") == "xing2" and default_reading("你") == "ni3" and default_reading("A") == ""

"""Phoneme tokens for the glmtts LM: a Chinese character can be given to the model as its pinyin, split into an
initial and a toned final, e.g. 行 read hang2 → ``<|H|><|ANG2|>``, 衰 cui1 → ``<|C|><|UEI1|>``.

The published GLM-TTS tokenizer holds these tokens (the inventory: ``lm_text.inventory()``, 204 of them) and its
LM was trained on text where characters are replaced by them; which characters, and in which tones, is the
published rule in ``lm_text.py``.

Finals follow strict pinyin (ü as V, wei → UEI, you → IOU), with the apical vowel of z/c/s written II and that of
zh/ch/sh/r written III.
"""
from __future__ import annotations

from functools import lru_cache

from pypinyin import Style, pinyin
from pypinyin.contrib.tone_convert import to_finals, to_initials

INITIALS = ("B", "C", "CH", "D", "F", "G", "H", "J", "K", "L", "M", "N", "P", "Q", "R", "S", "SH", "T", "X", "Z", "ZH")
FINALS = ("A", "AI", "AN", "ANG", "AO", "E", "EI", "EN", "ENG", "ER", "I", "IA", "IAN", "IANG", "IAO", "IE", "II",
          "III", "IN", "ING", "IO", "IONG", "IOU", "O", "ONG", "OU", "U", "UA", "UAI", "UAN", "UANG", "UEI", "UEN",
          "UENG", "UO", "V", "VAN", "VE", "VN")


def all_tokens() -> list[str]:
    """The published phoneme token inventory (``G2P_all_phonemes.json``): 21 initials and 183 toned finals."""
    from .lm_text import inventory

    return list(inventory())


def syllable_tokens(syllable: str) -> list[str] | None:
    """``hang2`` → ``['<|H|>', '<|ANG2|>']``; None for what has no final (interjections such as ``hm``)."""
    syllable = syllable.strip().lower()
    if not syllable or not syllable[-1].isdigit():
        return None
    tone = int(syllable[-1])
    if not 1 <= tone <= 5:
        return None
    base = syllable[:-1].replace("ü", "v").replace("ê", "e")
    initial = to_initials(base, strict=True)
    final = "io" if base == "yo" else to_finals(base, strict=True)
    if not final:
        return None
    if final == "i" and initial in ("z", "c", "s"):
        final = "ii"
    elif final == "i" and initial in ("zh", "ch", "sh", "r"):
        final = "iii"
    out = [f"<|{initial.upper()}|>"] if initial else []
    return out + [f"<|{final.upper()}{tone}|>"]


@lru_cache(maxsize=65536)
def default_reading(char: str) -> str:
    """The character's most common reading (``行`` → ``xing2``), or "" for what pypinyin does not know."""
    readings = pinyin(char, style=Style.TONE3, neutral_tone_with_five=True, errors=lambda _: [""])
    return readings[0][0] if readings and readings[0] else ""

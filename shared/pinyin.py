"""Pinyin syllables with tone digits, the form of the frontend's engine-neutral readings (frontend.v1.Word.pinyin):
validation and the split into initial and final that every engine's mapping starts from.

A syllable is letters + one tone digit (1-4, neutral tone 5), ü written v (``lv4``). ``ERHUA`` ("r5") is not a
syllable of its own: it is the r-colouring of the syllable before it (an erhua 儿: 那儿 na4 r5, 玩儿 wan2 r5); each
engine renders it as its model can (frontend README, "Text views").
"""
from __future__ import annotations

import re
from functools import lru_cache

ERHUA = "r5"

INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s")
# canonical finals (iou, uei, uen written out; ü as ü)
FINALS = frozenset({
    "a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "i", "ia", "ian", "iang", "iao", "ie", "in", "iou", "ing",
    "iong", "ong", "ou", "u", "uei", "ua", "uai", "uan", "uen", "uang", "ueng", "uo", "o", "ü", "üe", "üan", "ün",
})
# whole syllables without an initial/final analysis
SPECIAL = frozenset({"er", "m", "n", "ng", "hm", "hng", "o", "ê", "io"})
_ZERO_INITIAL = {
    "yi": "i", "ya": "ia", "ye": "ie", "yao": "iao", "you": "iou", "yan": "ian", "yang": "iang", "yin": "in",
    "ying": "ing", "yong": "iong", "yu": "ü", "yue": "üe", "yuan": "üan", "yun": "ün", "yo": "io",
    "wu": "u", "wa": "ua", "wo": "uo", "wai": "uai", "wei": "uei", "wan": "uan", "wen": "uen",
    "wang": "uang", "weng": "ueng",
}
_ABBREV = {"iu": "iou", "ui": "uei", "un": "uen"}
_JQX = {"u": "ü", "ue": "üe", "uan": "üan", "un": "ün"}
_SYLLABLE_RE = re.compile(r"^([a-zêü]+)([1-5])$")


def split(base: str) -> tuple[str, str]:
    """Pinyin without tone (ü as ü) → (initial, canonical final); a whole syllable (``er``, ``hng``, ``m``) comes back
    as ("", itself). Raises ValueError for what is not a Mandarin syllable."""
    if base in SPECIAL and base not in ("n", "m"):
        return "", base
    if base in ("m", "n"):
        return "", base
    if base in _ZERO_INITIAL:
        return "", _ZERO_INITIAL[base]
    for ini in INITIALS:
        if base.startswith(ini) and len(base) > len(ini):
            fin = base[len(ini):]
            if ini in "jqx" and fin in _JQX:
                fin = _JQX[fin]
            elif fin in _ABBREV:
                fin = _ABBREV[fin]
            if ini == "h" and fin in ("m", "ng"):
                return "", base
            if fin not in FINALS:
                raise ValueError(f"unknown final in {base!r}")
            return ini, fin
    if base in FINALS and base[0] in "aeo":
        return "", base
    raise ValueError(f"not a Mandarin syllable: {base!r}")


def normalize_syllable(syl: str) -> str:
    """'lü4'/'lv4'/'LV4' → 'lv4' (the form pypinyin's TONE3 uses)."""
    return syl.strip().lower().replace("ü", "v").replace("u:", "v")


def parse(syl: str) -> tuple[str, str, int]:
    """'zhong1' → ('zh', 'ong', 1); 'lv4' → ('l', 'ü', 4). Raises ValueError for what is not pinyin with a tone
    digit (``ERHUA`` included: it is no syllable)."""
    s = normalize_syllable(syl).replace("v", "ü")
    m = _SYLLABLE_RE.match(s)
    if not m:
        raise ValueError(f"not a pinyin syllable with tone digit: {syl!r}")
    initial, final = split(m.group(1))
    return initial, final, int(m.group(2))


def split_tone(syl: str) -> tuple[str, int]:
    s = normalize_syllable(syl)
    return s[:-1], int(s[-1])


def _valid_bases() -> frozenset[str]:
    from pypinyin.contrib.tone_convert import to_tone3
    from pypinyin.pinyin_dict import pinyin_dict

    bases = set()
    for value in pinyin_dict.values():
        for p in value.split(","):
            t3 = to_tone3(p, neutral_tone_with_five=True)
            base = t3[:-1] if t3[-1:].isdigit() else t3
            base = base.replace("ü", "v")
            try:
                split(base.replace("v", "ü"))
            except ValueError:
                continue
            bases.add(base)
    return frozenset(bases)


@lru_cache(maxsize=1)
def valid_bases() -> frozenset[str]:
    """Every syllable (without tone, ü as v) some character is read with in pypinyin's dictionary."""
    return _valid_bases()


def is_valid_syllable(syl: str) -> bool:
    s = normalize_syllable(syl)
    if len(s) < 2 or s[-1] not in "12345":
        return False
    return s[:-1] in valid_bases()

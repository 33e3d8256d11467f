"""Pinyin syllables: validation and conversion to Kokoro v1.0 phonemes (misaki zh "legacy" IPA style).

The mapping follows the pinyin-to-ipa tables (first variant of each entry): initials, finals and a few special
syllables map to IPA; the tone mark (→ ↗ ↓ ↘, none for the neutral tone) is placed right after the syllable's
nucleus, i.e. before a coda n/ŋ. Non-syllabic combining marks are not emitted.
"""
from __future__ import annotations

import re
from functools import lru_cache

TONE_MARKS = {1: "→", 2: "↗", 3: "↓", 4: "↘", 5: ""}

INITIALS = {
    "b": "p", "p": "pʰ", "m": "m", "f": "f", "d": "t", "t": "tʰ", "n": "n", "l": "l",
    "g": "k", "k": "kʰ", "h": "x", "j": "ʨ", "q": "ʨʰ", "x": "ɕ",
    "zh": "ꭧ", "ch": "ꭧʰ", "sh": "ʂ", "r": "ɻ", "z": "ʦ", "c": "ʦʰ", "s": "s",
}
_INITIAL_ORDER = ("zh", "ch", "sh") + tuple(k for k in INITIALS if len(k) == 1)

# final → (onset glide, nucleus, coda); the tone mark goes after the nucleus.
FINALS = {
    "a": ("", "a", ""), "ai": ("", "ai", ""), "an": ("", "a", "n"), "ang": ("", "a", "ŋ"), "ao": ("", "au", ""),
    "e": ("", "ɤ", ""), "ei": ("", "ei", ""), "en": ("", "ə", "n"), "eng": ("", "ə", "ŋ"),
    "i": ("", "i", ""), "ia": ("j", "a", ""), "ian": ("j", "ɛ", "n"), "iang": ("j", "a", "ŋ"),
    "iao": ("j", "au", ""), "ie": ("j", "e", ""), "in": ("", "i", "n"), "iou": ("j", "ou", ""),
    "ing": ("", "i", "ŋ"), "iong": ("j", "ʊ", "ŋ"), "ong": ("", "ʊ", "ŋ"), "ou": ("", "ou", ""),
    "u": ("", "u", ""), "uei": ("w", "ei", ""), "ua": ("w", "a", ""), "uai": ("w", "ai", ""),
    "uan": ("w", "a", "n"), "uen": ("w", "ə", "n"), "uang": ("w", "a", "ŋ"), "ueng": ("w", "ə", "ŋ"),
    "uo": ("w", "o", ""), "o": ("w", "o", ""),
    "ü": ("", "y", ""), "üe": ("ɥ", "e", ""), "üan": ("ɥ", "ɛ", "n"), "ün": ("", "y", "n"),
}
# whole syllables without an initial/final analysis
SPECIAL = {
    "er": ("", "ɚ", ""), "m": ("", "m", ""), "n": ("", "n", ""), "ng": ("", "ŋ", ""),
    "hm": ("h", "m", ""), "hng": ("h", "ŋ", ""), "o": ("", "ɔ", ""), "ê": ("", "ɛ", ""), "io": ("j", "ɔ", ""),
}
_ZERO_INITIAL = {
    "yi": "i", "ya": "ia", "ye": "ie", "yao": "iao", "you": "iou", "yan": "ian", "yang": "iang", "yin": "in",
    "ying": "ing", "yong": "iong", "yu": "ü", "yue": "üe", "yuan": "üan", "yun": "ün", "yo": "io",
    "wu": "u", "wa": "ua", "wo": "uo", "wai": "uai", "wei": "uei", "wan": "uan", "wen": "uen",
    "wang": "uang", "weng": "ueng",
}
_ABBREV = {"iu": "iou", "ui": "uei", "un": "uen"}
_JQX = {"u": "ü", "ue": "üe", "uan": "üan", "un": "ün"}

_SYLLABLE_RE = re.compile(r"^([a-zêü]+)([1-5])$")


def _split(base: str) -> tuple[str, str]:
    """pinyin without tone → (initial, canonical final). Raises ValueError."""
    if base in SPECIAL and base not in ("n", "m"):
        return "", base
    if base in ("m", "n"):
        return "", base
    if base in _ZERO_INITIAL:
        return "", _ZERO_INITIAL[base]
    for ini in _INITIAL_ORDER:
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
                _split(base.replace("v", "ü"))
            except ValueError:
                continue
            bases.add(base)
    return frozenset(bases)


@lru_cache(maxsize=1)
def valid_bases() -> frozenset[str]:
    return _valid_bases()


def normalize_syllable(syl: str) -> str:
    """'lü4'/'lv4'/'LV4' → 'lv4' (the form pypinyin's TONE3 uses)."""
    return syl.strip().lower().replace("ü", "v").replace("u:", "v")


def is_valid_syllable(syl: str) -> bool:
    s = normalize_syllable(syl)
    if len(s) < 2 or s[-1] not in "12345":
        return False
    return s[:-1] in valid_bases()


@lru_cache(maxsize=4096)
def pinyin_syllable_to_kokoro(syl: str) -> str:
    """'zhong1' → 'ꭧʊ→ŋ'. Raises ValueError for something that is not pinyin with a tone digit."""
    s = normalize_syllable(syl)
    m = _SYLLABLE_RE.match(s.replace("v", "ü"))
    if not m:
        raise ValueError(f"not a pinyin syllable with tone digit: {syl!r}")
    base, tone = m.group(1), int(m.group(2))
    ini, fin = _split(base)
    mark = TONE_MARKS[tone]
    if not ini and fin in SPECIAL and (fin not in FINALS or fin == "o" and base == "o"):
        glide, nucleus, coda = SPECIAL[fin]
        return f"{glide}{nucleus}{mark}{coda}"
    if ini in ("zh", "ch", "sh", "r", "z", "c", "s") and fin == "i":
        return f"{INITIALS[ini]}ɨ{mark}"
    glide, nucleus, coda = FINALS[fin]
    return f"{INITIALS.get(ini, '')}{glide}{nucleus}{mark}{coda}"


def split_tone(syl: str) -> tuple[str, int]:
    s = normalize_syllable(syl)
    return s[:-1], int(s[-1])

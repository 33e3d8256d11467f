"""Character classes and input cleaning."""
from __future__ import annotations

import re
import unicodedata


def is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F)


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff\ufff9-\ufffb]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


def clean(text: str) -> str:
    """C0/C1 controls (except \\n and \\t), zero-width/bidi format chars and lone surrogates → space.

    One code point in, one code point out, so spans in the cleaned text are spans in the original.
    \\r becomes a space (\\r\\n ends a line once, at the \\n).
    """
    text = _CONTROL_RE.sub(" ", text)
    return _SURROGATE_RE.sub(" ", text)


def is_speakable_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "LN"


def is_speakable(text: str) -> bool:
    return any(is_speakable_char(c) for c in text)


SENTENCE_END = set("。！？!?；;\n…")
CLAUSE_PUNCT = set("，、,：:")
CLOSERS = set("”’」』）)》】〕\"'")
FULLWIDTH_ALNUM = {**{chr(0xFF10 + i): str(i) for i in range(10)},
                   **{chr(0xFF21 + i): chr(0x41 + i) for i in range(26)},
                   **{chr(0xFF41 + i): chr(0x61 + i) for i in range(26)}}


def is_latin_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z") or (ch.isalpha() and ord(ch) < 0x250)


def units(text: str) -> int:
    """Chinese-character equivalents: a CJK char = 1, an English word = 1, a digit = 1."""
    n = 0
    prev_latin = False
    for ch in text:
        if is_cjk(ch) or ch.isdigit():
            n += 1
            prev_latin = False
        elif is_latin_letter(ch):
            if not prev_latin:
                n += 1
            prev_latin = True
        else:
            prev_latin = ch in "'’" and prev_latin
    return n

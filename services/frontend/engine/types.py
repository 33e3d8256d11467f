from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Word:
    text: str
    lang: str                      # "zh" | "en" | "punct" | "other"
    pinyin: list[str] = field(default_factory=list)   # spoken (after tone sandhi), tone digits, neutral = 5
    phonemes: str = ""             # Kokoro v1.0 symbols only
    span: tuple[int, int] = (0, 0)  # code points in Segment.normalized
    citation: list[str] = field(default_factory=list)  # the same syllables before tone sandhi (dictionary tones)


@dataclass
class Segment:
    index: int
    text: str                      # original text (trimmed)
    normalized: str
    span: tuple[int, int]          # code points in the whole request text (cumulative over pushes)
    words: list[Word] = field(default_factory=list)
    phonemes: str = ""
    languages: list[tuple[str, int, int]] = field(default_factory=list)   # (lang, start, end) in normalized

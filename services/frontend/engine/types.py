from __future__ import annotations

from dataclasses import dataclass, field

from .english import Pronunciation


@dataclass
class Word:
    """Engine-neutral readings of one word (each decoder engine makes its own symbols from them)."""

    text: str
    lang: str                      # "zh" | "en" | "punct" | "other"
    pinyin: list[str] = field(default_factory=list)   # spoken (after tone sandhi), tone digits, neutral = 5; erhua "r5"
    span: tuple[int, int] = (0, 0)  # code points in Segment.normalized
    citation: list[str] = field(default_factory=list)  # the same syllables before tone sandhi (dictionary tones)
    english: tuple[Pronunciation, ...] = ()            # lang "en": how it is said, piece by piece (english.py)


@dataclass
class SourceStretch:
    """A stretch of the normalized text and the stretch of the request text it was made from (sourcemap.py)."""

    normalized: tuple[int, int]    # in Segment.normalized
    source: tuple[int, int]        # in the whole request text (the frame of Segment.span)


@dataclass
class Segment:
    index: int
    text: str                      # original text (trimmed)
    normalized: str
    span: tuple[int, int]          # code points in the whole request text (cumulative over pushes)
    words: list[Word] = field(default_factory=list)
    languages: list[tuple[str, int, int]] = field(default_factory=list)   # (lang, start, end) in normalized
    source_map: list[SourceStretch] = field(default_factory=list)         # covers normalized, in order

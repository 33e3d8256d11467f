"""Segment merging for a decoder whose LM reads whole passages (glmtts).

The published GLM-TTS inference gives its LM 30–60-unit passages (``split_by_len``: a passage closes at the first
mark once it holds 30 units, none holds more than 60), not clauses: "你好！" or "他说：" alone is a text the model
rarely saw, and each LM call re-reads the prompt. With a :class:`MergePolicy` the stream still cuts its segments
as for any engine (the first one early, for latency), but holds the later ones and hands them out merged once they
hold at least ``min_units`` (never more than ``max_units`` when the pieces allow); the first segment goes out on
its own only when nothing after it is there yet (streamed text), so a whole text given at once is merged from its
start. Units are the official ones: a Chinese character or mark 1, an English word 0.7 per syllable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .g2p import language_spans
from .textutil import is_cjk
from .types import Segment, SourceStretch, Word

_EN_WORD = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")
_VOWELS = re.compile(r"(?!e$)[aeiouy]+", re.I)
EN_SYLLABLE_UNITS = 0.7         # the official weight of an English syllable against a Chinese character
MARKS = set("。？！；：、.?!;:，,")


def lm_units(text: str) -> float:
    """Units as the published splitter counts them: CJK character, digit or other symbol 1, English word
    0.7 × its syllables (vowel groups), spaces 0."""
    n = 0.0
    pos = 0
    for m in _EN_WORD.finditer(text):
        n += sum(1 for c in text[pos:m.start()] if not c.isspace())
        n += EN_SYLLABLE_UNITS * max(1, len(_VOWELS.findall(m.group())))
        pos = m.end()
    n += sum(1 for c in text[pos:] if not c.isspace())
    return n


@dataclass
class MergePolicy:
    min_units: int = 30
    max_units: int = 60

    @classmethod
    def of(cls, min_units: int, max_units: int) -> "MergePolicy | None":
        if min_units <= 0:
            return None
        return cls(min_units, max(min_units, max_units or min_units * 2))


@dataclass
class _Pending:
    segments: list[Segment] = field(default_factory=list)
    line_ends: list[bool] = field(default_factory=list)    # the piece ended at a line break
    units: float = 0.0


def _sep(a: str, b: str) -> str:
    return "" if not a or not b or is_cjk(a[-1]) or is_cjk(b[0]) else " "


def merge(segments: list[Segment], line_ends: list[bool], index: int) -> Segment:
    """One segment of consecutive ``segments`` (spans into the request text, in order). A piece that ended at a
    line break without a mark gets one (the published text rule ends every line). A separator put between two
    pieces (a space, that mark) joins the source-map entry before it."""
    if len(segments) == 1:
        return replace(segments[0], index=index)
    text = normalized = ""
    words: list[Word] = []
    source_map: list[SourceStretch] = []
    prev_end = None

    def extend_last(to: int) -> None:
        if source_map:
            last = source_map[-1]
            source_map[-1] = SourceStretch((last.normalized[0], to), last.source)

    for s, line_end in zip(segments, line_ends):
        if prev_end is not None:
            text += " " if s.span[0] > prev_end else ""
            normalized += _sep(normalized, s.normalized)
            extend_last(len(normalized))
        text += s.text
        off = len(normalized)
        normalized += s.normalized
        words.extend(replace(w, span=(w.span[0] + off, w.span[1] + off)) for w in s.words)
        source_map.extend(SourceStretch((m.normalized[0] + off, m.normalized[1] + off), m.source)
                          for m in s.source_map)
        if line_end and s is not segments[-1] and normalized and normalized[-1] not in MARKS:
            normalized += "。" if any(is_cjk(c) for c in s.normalized) else "."
            extend_last(len(normalized))
        prev_end = s.span[1]
    return Segment(index=index, text=text, normalized=normalized, span=(segments[0].span[0], segments[-1].span[1]),
                   words=words, languages=language_spans(words), source_map=source_map)


class Merger:
    """Holds the segments of one stream and hands them out merged by ``policy``."""

    def __init__(self, policy: MergePolicy, early_first: bool = True):
        self.policy = policy
        self.early_first = early_first
        self.pending = _Pending()
        self.emitted = 0

    def add(self, seg: Segment, line_end: bool) -> list[Segment]:
        out = []
        u = lm_units(seg.normalized)
        if self.pending.segments and self.pending.units + u > self.policy.max_units:
            out += self.take()
        p = self.pending
        p.segments.append(seg)
        p.line_ends.append(line_end)
        p.units += u
        if p.units >= self.policy.min_units:
            out += self.take()
        return out

    def idle(self, final: bool) -> list[Segment]:
        """Nothing more can be cut now: the first segment goes out at once (latency), the rest only at the end."""
        return self.take() if final or self.emitted == 0 and self.early_first else []

    def take(self) -> list[Segment]:
        p = self.pending
        if not p.segments:
            return []
        seg = merge(p.segments, p.line_ends, self.emitted)
        self.pending = _Pending()
        self.emitted += 1
        return [seg]

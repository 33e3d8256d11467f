"""Incremental sentence/clause segmentation over a growing buffer (see Splitter.next_cut), and the segment schedule
(Schedule) that sizes each segment so it is synthesized before the audio before it has finished playing."""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from .textutil import CLAUSE_PUNCT, CLOSERS, SENTENCE_END, is_cjk, is_latin_letter, units

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "eg", "ie", "no", "inc", "ltd",
    "co", "mt", "ave", "approx", "dept", "fig", "gen", "gov", "sgt", "capt", "col", "lt", "rev", "est", "u.s",
    "a.m", "p.m", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "vol",
}
_LAST_WORD_RE = re.compile(r"([A-Za-z](?:[A-Za-z.]*[A-Za-z])?)$")
FIRST_CLAUSE_MIN_UNITS = 2
# symbols that belong to the number or word next to them ("-3℃", "¥3999", "50%", "3:30", "e-mail", "a/b")
_TOKEN_SYMBOLS = set(".,:'’%-/℃℉°‰％$¥￥€£")
# between two digits these join them ("14：30", "12，345", "3．5"): never a place to cut
_DIGIT_JOINERS = set("：:，,．.")


def _tokenish(c: str) -> bool:
    return c.isdigit() or is_latin_letter(c) or c in _TOKEN_SYMBOLS


def _joined(buf: str, i: int) -> bool:
    """True if buf[i-1] and buf[i] belong to one token (number, time, code, unit, English word): no cut between."""
    a, b = buf[i - 1], buf[i]
    if _tokenish(a) and _tokenish(b):
        return True
    # a digit run stays with what is right next to it ("2026年", "第3", "3个", "14：30"): its reading depends on it
    return a.isdigit() and not b.isspace() or b.isdigit() and not a.isspace()


# ---- the segment schedule ------------------------------------------------------------------------------------------
SYLLABLE_S = 0.21            # seconds of speech per unit (a Mandarin syllable, an English word) at speed 1
DEFAULT_RTF = 0.3            # decoder seconds of compute per second of audio when the decoder has not told us
FIRST_UNITS = 4              # the first segment: a handful of syllables (then the next word boundary)
LATER_MIN_UNITS = 8          # later segments are never cut shorter than this by the schedule (intelligibility)
SLACK_UNITS = 4              # a size cut moves to a clause end (or the end of the text) this close after it
LOOKAHEAD_SHARE = 0.6        # a later segment's synthesis may take this share of the audio already scheduled


def pause_s(text: str) -> float:
    """Estimated silence after a segment, by its final punctuation."""
    tail = text.rstrip()[-1:]
    if tail in SENTENCE_END or tail in "。.":
        return 0.30
    if tail in CLAUSE_PUNCT:
        return 0.12
    return 0.08


@dataclass
class Schedule:
    """How long each segment of one stream may be, in units (CJK characters, digits, English words).

    The first segment is short (``first_units``), so the first audio comes early. Segment *k* must be synthesized
    while the audio of segments 0..k-1 plays: with the decoder's compute cost ``rtf`` (seconds of compute per second
    of audio for this stream, as the decoder measured it under its present load), segment *k* may hold
    ``LOOKAHEAD_SHARE × audio_before / rtf`` seconds of speech. Sizes therefore grow geometrically (clause, then
    sentence) by a factor ``1 + LOOKAHEAD_SHARE / rtf``, faster on a fast decoder, slower on a loaded one.
    """

    rtf: float = DEFAULT_RTF
    max_units: int = 60
    first_units: int = FIRST_UNITS

    def __post_init__(self):
        if not self.rtf or self.rtf <= 0 or not math.isfinite(self.rtf):
            self.rtf = DEFAULT_RTF
        self.rtf = min(max(self.rtf, 0.01), 10.0)

    def limit(self, index: int, audio_before_s: float) -> int:
        if index == 0:
            return max(FIRST_CLAUSE_MIN_UNITS, min(self.first_units, self.max_units))
        allowed = LOOKAHEAD_SHARE * audio_before_s / (self.rtf * SYLLABLE_S)
        return int(min(self.max_units, max(LATER_MIN_UNITS, allowed)))

    @staticmethod
    def audio_s(text: str) -> float:
        """Estimated seconds of audio a segment of this text gives."""
        return units(text) * SYLLABLE_S + pause_s(text)


class Splitter:
    """Finds where the pending buffer may be cut. Keeps its scan state so repeated pushes stay linear."""

    def __init__(self, max_units: int, phoneme_mode: bool):
        self.max_units = max(4, max_units)
        self.phoneme_mode = phoneme_mode
        self.reset()

    def reset(self):
        self.pos = 0            # next index to examine
        self.units = 0          # units in buf[:pos]
        self.prev_latin = False
        self.depth = 0          # inside [..] or {..}
        self.clause_cut = 0     # last cut after clause punctuation
        self.word_cut = 0       # last cut between tokens
        self.limit_cut = 0      # first word boundary at the schedule's size
        self.limit_units = 0
        self.overflow = False

    def _unit(self, c: str) -> int:
        if is_cjk(c) or c.isdigit():
            self.prev_latin = False
            return 1
        if is_latin_letter(c):
            u = 0 if self.prev_latin else 1
            self.prev_latin = True
            return u
        self.prev_latin = self.prev_latin and c in "'’"
        return 0

    def _sentence_end(self, buf: str, i: int, final: bool) -> int | None:
        """End index (exclusive) if a sentence ends at buf[i]; -1 = undecidable yet; None = no."""
        c = buf[i]
        n = len(buf)
        if c in SENTENCE_END:
            j = i + 1
            while j < n and (buf[j] in SENTENCE_END and buf[j] != "\n" or buf[j] in CLOSERS):
                j += 1
            return j
        if c in ".．":
            j = i + 1
            while j < n and buf[j] in CLOSERS:
                j += 1
            if j >= n:
                return j if final else -1
            nxt = buf[j]
            if nxt == "." or c == "." and buf[i - 1:i] == ".":
                if nxt == ".":
                    return None       # inside an ellipsis "..."
            if is_cjk(nxt):
                return j
            if not nxt.isspace():
                return None           # 3.14, e.g, example.com
            m = _LAST_WORD_RE.search(buf[max(0, i - 12):i])
            if m:
                word = m.group(1).lower()
                if word in ABBREVIATIONS or len(word) == 1 and word.isalpha() and m.group(1).isupper():
                    return None
            return j
        return None

    def next_cut(self, buf: str, final: bool, first: bool, limit: int | None = None) -> int | None:
        """Where to cut ``buf`` (exclusive end), or None to wait for more text. ``limit``: this segment's size in
        units from the schedule (default ``max_units``): once reached, cut at the next word boundary (never inside a
        number, time, code, unit or English word); a clause end cuts once the segment holds half of it (the first
        segment: FIRST_CLAUSE_MIN_UNITS); a sentence end always cuts."""
        limit = min(self.max_units, limit or self.max_units)
        clause_min = FIRST_CLAUSE_MIN_UNITS if first else max(FIRST_CLAUSE_MIN_UNITS, limit // 2)
        n = len(buf)
        i = self.pos
        while i < n:
            c = buf[i]
            if self.phoneme_mode and c in "[{":
                self.depth += 1
            elif self.phoneme_mode and c in "]}" and self.depth:
                self.depth -= 1
                i += 1
                self.pos = i
                continue
            if self.depth:
                self.units += self._unit(c)
                i += 1
                self.pos = i
                continue
            # a run with no place to cut (10,000 digits, one endless "word"): cut it hard, so no segment is huge
            if i >= (2 if self.overflow else 8) * self.max_units and not unicodedata.combining(c):
                return i
            # a cut between buf[i-1] and buf[i]
            if i > 0 and not _joined(buf, i) and not (self.phoneme_mode and c in "[{"):
                if self.overflow and self.units > 0:
                    return i
                self.word_cut = i
                if self.units >= limit and (c.isalnum() or is_cjk(c)):
                    # the schedule's size reached: cut at this word boundary, unless a clause or sentence ends
                    # within SLACK_UNITS more (no two-syllable stub before a comma)
                    if not self.limit_cut:
                        self.limit_cut, self.limit_units = i, self.units
            end = self._sentence_end(buf, i, final)
            if end == -1:
                return None           # wait for the next piece (maybe "3." + "14")
            if end is not None:
                return end
            if c in CLAUSE_PUNCT:
                prev_digit = i > 0 and buf[i - 1].isdigit()
                if c in _DIGIT_JOINERS and prev_digit and (i + 1 >= n and not final or i + 1 < n and buf[i + 1].isdigit()):
                    if i + 1 >= n:
                        return None   # "12," could be "12,345", "14：" could be "14：30"
                else:
                    self.clause_cut = i + 1
                    if self.units >= clause_min:
                        j = i + 1
                        while j < n and buf[j] in CLOSERS:
                            j += 1
                        return j
            self.units += self._unit(c)
            if self.limit_cut and self.units > self.limit_units + SLACK_UNITS:
                return self.limit_cut
            if self.units > self.max_units:   # inside one long token: cut before it, or hard (see above)
                cut = self.clause_cut or self.word_cut
                if cut:
                    return cut
                self.overflow = True
            i += 1
            self.pos = i
        return None

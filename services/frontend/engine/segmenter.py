"""Incremental sentence/clause segmentation over a growing buffer (see Splitter.next_cut)."""
from __future__ import annotations

import re
import unicodedata

from .textutil import CLAUSE_PUNCT, CLOSERS, SENTENCE_END, is_cjk, is_latin_letter

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "eg", "ie", "no", "inc", "ltd",
    "co", "mt", "ave", "approx", "dept", "fig", "gen", "gov", "sgt", "capt", "col", "lt", "rev", "est", "u.s",
    "a.m", "p.m", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "vol",
}
_LAST_WORD_RE = re.compile(r"([A-Za-z](?:[A-Za-z.]*[A-Za-z])?)$")
FIRST_CLAUSE_MIN_UNITS = 2


def _tokenish(c: str) -> bool:
    return c.isdigit() or is_latin_letter(c) or c in ".,:'’%-/"


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

    def next_cut(self, buf: str, final: bool, first: bool) -> int | None:
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
            if i > 0 and not (_tokenish(buf[i - 1]) and _tokenish(c)) and not (self.phoneme_mode and c in "[{"):
                if self.overflow and self.units > 0:
                    return i
                self.word_cut = i
            end = self._sentence_end(buf, i, final)
            if end == -1:
                return None           # wait for the next piece (maybe "3." + "14")
            if end is not None:
                return end
            if c in CLAUSE_PUNCT:
                prev_digit = i > 0 and buf[i - 1].isdigit()
                if c in ",:" and prev_digit and (i + 1 >= n and not final or i + 1 < n and buf[i + 1].isdigit()):
                    if i + 1 >= n:
                        return None   # "12," could be "12,345"
                else:
                    self.clause_cut = i + 1
                    if first and self.units >= FIRST_CLAUSE_MIN_UNITS:
                        j = i + 1
                        while j < n and buf[j] in CLOSERS:
                            j += 1
                        return j
            self.units += self._unit(c)
            if self.units > self.max_units:
                cut = self.clause_cut or self.word_cut
                if cut:
                    return cut
                self.overflow = True
            i += 1
            self.pos = i
        return None

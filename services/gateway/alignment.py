"""Per-character alignment for the caller: the decoder's timings (stretches of a segment's normalized text, samples
in the Decode stream) → entries over the text the client sent (code points in the stream's text) and ms in the
stream's audio timeline (offset_ms). Pure logic, no gRPC.

The rules (README, "Barge-in and alignment"):

* Normalized text maps back to the client's text by ``Segment.source_map``. A stretch the text normalization read
  as a whole ("9:45" → 九点四十五分) is ONE entry: it starts with the first of its timings and ends with the last,
  so it is handed out once all of them are known (it may come one chunk later than its sound starts).
* Every character of the segment's span gets an entry. A character with no timing of its own (quotes, spaces,
  symbols the engines skip, markup of phoneme mode) gets a silent, zero-length entry at the end of the sound before
  it (at the start of the segment's first sound when nothing came before), handed out with the entry after it or
  at the segment's end. Punctuation the engine voices as a pause is silent with the pause's length.
* An entry is heard when its sound has ended by the caller's played position (``heard_end``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable


@dataclass
class Entry:
    """One entry for the caller: [start, end) in the stream's text, times in the stream's audio (ms)."""

    start: int
    end: int
    start_ms: float
    end_ms: float
    silent: bool = False


@dataclass
class _Group:
    """A stretch of normalized text and the stretch of the client's text it came from (reply frame)."""

    n_start: int
    n_end: int
    s_start: int
    s_end: int


def source_groups(normalized: str, source_map, source: str, source_start: int) -> list[_Group]:
    """The segment's normalized → client-text stretches, in order. ``source_map``: the frontend's
    ``Segment.source_map`` entries (spans in the request text; a run of unchanged characters may share one: split
    here, one stretch per character); ``source``: the client's text of the segment's span, which starts at
    ``source_start``. An empty map (a frontend without it) is derived by matching the two texts: equal runs map one
    to one, a replaced run is one stretch."""
    if len(source_map):
        groups = []
        for m in source_map:
            na, nb, sa, sb = m.normalized.start, m.normalized.end, m.source.start, m.source.end
            if nb - na == sb - sa and normalized[na:nb] == source[sa - source_start:sb - source_start]:
                groups += [_Group(na + k, na + k + 1, sa + k, sa + k + 1) for k in range(nb - na)]  # unchanged run
            else:
                groups.append(_Group(na, nb, sa, sb))        # read as a whole: one stretch
        return groups
    groups: list[_Group] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, normalized, source, autojunk=False).get_opcodes():
        if tag == "equal":
            groups += [_Group(i1 + k, i1 + k + 1, source_start + j1 + k, source_start + j1 + k + 1)
                       for k in range(i2 - i1)]
        elif tag == "replace":
            groups.append(_Group(i1, i2, source_start + j1, source_start + j2))
        elif tag == "delete":                  # normalized text made from nothing the client sent: the stretch before
            if groups:
                groups[-1].n_end = i2
            else:
                groups.append(_Group(i1, i2, source_start + j1, source_start + j1))
        # "insert": client text that says nothing (markup, symbols): no group, its characters get silent entries
    if groups and not groups[0].s_end > groups[0].s_start and len(groups) > 1:   # a leading empty stretch
        first = groups.pop(0)
        groups[0].n_start = first.n_start
    return groups


class SegmentAligner:
    """One segment's timings → the caller's entries. ``span``: the segment's span in the stream's text; ``groups``:
    from ``source_groups`` shifted to the stream frame; ``to_ms``: Decode-stream samples → ms of the stream."""

    def __init__(self, span: tuple[int, int], groups: list[_Group], to_ms: Callable[[int], float]):
        self.span = span
        self.groups = groups
        self.to_ms = to_ms
        self.cursor = span[0]               # the client's text before this has its entries
        self.last_end_ms: float | None = None
        self.pending: list | None = None    # [s_start, s_end, n_end needed, n_covered, start_ms, end_ms, silent]
        self.timed = False                  # any timing at all (else the engine gave none)

    def _stretch(self, a: int, b: int) -> tuple[int, int, int] | None:
        """Normalized [a, b) → (client start, client end, normalized end of its groups)."""
        hit = [g for g in self.groups if (g.n_start < b and g.n_end > a) or (a == b and g.n_start <= a < g.n_end)]
        if not hit:
            return None
        return min(g.s_start for g in hit), max(g.s_end for g in hit), max(g.n_end for g in hit)

    def add(self, timings) -> list[Entry]:
        """The decoder's timings of one chunk (``decoder.v1.Timing``) → the entries that are complete now."""
        out: list[Entry] = []
        for t in timings:
            self.timed = True
            stretch = self._stretch(t.span.start, t.span.end)
            if stretch is None:
                continue
            s_start, s_end, n_need = stretch
            start_ms, end_ms = self.to_ms(t.start_sample), self.to_ms(t.end_sample)
            p = self.pending
            if p is not None and s_start < p[1]:           # the same stretch of the client's text: one entry
                p[1] = max(p[1], s_end)
                p[2] = max(p[2], n_need)
                p[3] = max(p[3], t.span.end)
                p[5] = max(p[5], end_ms)
                p[6] = p[6] and t.silent
            else:
                out += self._flush()
                self.pending = p = [s_start, s_end, n_need, t.span.end, start_ms, end_ms, t.silent]
            if p[3] >= p[2]:                                # every normalized character of it has its time
                out += self._flush()
        return out

    def _flush(self) -> list[Entry]:
        p, self.pending = self.pending, None
        if p is None:
            return []
        s_start, s_end, _, _, start_ms, end_ms, silent = p
        s_start = max(s_start, self.cursor)
        if s_end <= s_start:                               # already covered: its time extends nothing
            return []
        out = self._gap(s_start, start_ms)
        out.append(Entry(s_start, s_end, start_ms, end_ms, silent))
        self.cursor = s_end
        self.last_end_ms = end_ms
        return out

    def _gap(self, upto: int, next_start_ms: float) -> list[Entry]:
        at = self.last_end_ms if self.last_end_ms is not None else next_start_ms
        out = [Entry(i, i + 1, at, at, True) for i in range(self.cursor, min(upto, self.span[1]))]
        self.cursor = max(self.cursor, upto)
        return out

    def end(self, end_ms: float) -> list[Entry]:
        """The segment's last chunk came (its audio ends at ``end_ms``): what was held, and silent entries for the
        characters after the last sound."""
        out = self._flush()
        if self.cursor < self.span[1]:
            at = self.last_end_ms if self.last_end_ms is not None else end_ms
            out += [Entry(i, i + 1, at, at, True) for i in range(self.cursor, self.span[1])]
            self.cursor = self.span[1]
        return out


def heard_end(entries: list[Entry], played_ms: float, start: int) -> int:
    """The end (stream text position) of the longest run of ``entries`` (in order, from ``start``) whose sound has
    ended by ``played_ms``."""
    end = start
    for e in entries:
        if e.end_ms > played_ms + 1e-6:
            break
        end = max(end, e.end)
    return end

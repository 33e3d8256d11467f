"""Estimated character times for glmtts (flagged ``alignment_estimated``): the LM turns a segment's text tokens into
speech tokens (25 a second) without saying which text token each speech token voices, so where a character sits is
not known. The estimate shares the segment's audio between its characters in proportion to their LM text units (a
CJK character 1, a Latin word 1 shared by its letters, a pause mark 1 (silent), anything else 0): while the segment
is still being spoken its length is taken as the audio so far or ``SECONDS_PER_UNIT`` per unit, whichever is longer;
at its last chunk the real length places the characters not yet handed out. A character is handed out with the
chunk in which its estimated start falls (never before a character handed out earlier).

Not measured: on random weights (the only checkpoints on this machine) the audio is noise, so there is nothing to
compare the estimate with; with real weights it can be measured against Whisper word timestamps (README).
"""
from __future__ import annotations

import re
import unicodedata

from ..base import SegmentInput, Timing

SECONDS_PER_UNIT = 0.22          # Mandarin at a conversational rate: ~4.5 syllables a second
PAUSE_MARKS = frozenset("，。！？；：、…,.!?;:—")


def unit_weights(normalized: str) -> list[tuple[float, bool]]:
    """Per character of the normalized text: (its share of LM text units, silent)."""
    out: list[tuple[float, bool]] = [(0.0, True)] * len(normalized)
    for m in re.finditer(r"[A-Za-z]+", normalized):
        n = m.end() - m.start()
        for i in range(m.start(), m.end()):
            out[i] = (1.0 / n, False)
    for i, c in enumerate(normalized):
        if c in PAUSE_MARKS:
            out[i] = (1.0, True)
        elif unicodedata.category(c)[0] in "LN" and not ("A" <= c <= "z" and c.isascii()):
            out[i] = (1.0, False)
    return out


class SegmentTimer:
    """One segment's estimate; ``chunk()`` for each of its chunks, in order."""

    def __init__(self, segment: SegmentInput, sample_rate: int):
        self.weights = unit_weights(segment.normalized)
        self.units = sum(w for w, _ in self.weights) or 1.0
        self.prior = int(self.units * SECONDS_PER_UNIT * sample_rate)
        self.samples = 0                  # the segment's audio so far
        self.next = 0                     # the first character not handed out yet
        self.last_start = 0

    def _starts(self, total: int) -> list[int]:
        acc, out = 0.0, []
        for w, _ in self.weights:
            out.append(int(acc / self.units * total))
            acc += w
        return out

    def chunk(self, n: int, final: bool) -> list[Timing]:
        """A chunk of ``n`` samples → the timings of the characters estimated to start in it (samples from its
        first sample); the last chunk hands out the rest."""
        begin, self.samples = self.samples, self.samples + n
        total = self.samples if final else max(self.samples, self.prior)
        starts = self._starts(total)
        ends = starts[1:] + [total]
        out = []
        while self.next < len(self.weights) and (final or starts[self.next] < self.samples):
            i = self.next
            w, silent = self.weights[i]
            self.next += 1
            if w == 0:
                continue                  # no unit of its own (a quote, a space): the gateway places it
            a = max(starts[i], self.last_start, begin)
            b = max(ends[i], a)
            self.last_start = a
            out.append(Timing(i, i + 1, a - begin, b - begin, silent))
        return out

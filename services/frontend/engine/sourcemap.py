"""The map from a segment's normalized text back to the request text (frontend.v1.Segment.source_map).

Exact where the frontend itself moves characters (inline readings and their brackets: markup.py; a markdown heading
mark; the pieces between inline readings, each normalized on its own: core.build_segment). Inside one normalized
piece the text normalization is many rewrites (zh_rules, wetext), so its input and output are aligned afterwards,
difflib-style: runs left unchanged map one to one (one entry per run, of equal lengths), what was rewritten maps as
one stretch ("9:45" → 九点四十五分). Then stretches are joined where an alignment would cut through a word:

- a boundary inside a Latin/digit word of the input or a Latin word of the output (CA1234 → CA幺二三四, 5G → 五G,
  Dr. → Doctor: difflib would keep the matching letters apart), and
- a stretch with nothing on one side (a deleted space or mark, an inserted separator) joins the stretch before it
  (the first one joins the next).

So every entry has text on both sides, entries cover the normalized text in order, and their source spans are in
order without overlap.
"""
from __future__ import annotations

from difflib import SequenceMatcher

Stretch = tuple[int, int, int, int]      # (normalized start, end, source start, end)


def _wordish(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _latin(c: str) -> bool:
    return c.isascii() and c.isalpha()


def align(src: str, out: str) -> list[Stretch]:
    """Stretches of ``out`` (the normalization of ``src``) and the stretches of ``src`` they come from, covering
    ``out`` in order (positions in ``src`` and ``out``)."""
    if not out:
        return []
    if src == out:
        return [(0, len(out), 0, len(src))]
    raw: list[list[int]] = []
    equal: list[bool] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, src, out, autojunk=False).get_opcodes():
        if op != "equal":
            raw.append([j1, j2, i1, i2])
            equal.append(False)
            continue
        k = i1          # an unchanged run, cut where Latin/digit words start and end: only a word joins a rewrite
        for i in range(i1 + 1, i2 + 1):
            if i == i2 or _wordish(src[i]) != _wordish(src[i - 1]):
                raw.append([j1 + k - i1, j1 + i - i1, k, i])
                equal.append(True)
                k = i
    changed = True
    while changed and len(raw) > 1:
        changed = False
        for k in range(len(raw)):
            a = raw[k]
            empty = a[0] == a[1] or a[2] == a[3]
            if k + 1 < len(raw):
                b = raw[k + 1]
                s, o = a[3], a[1]          # the boundary between a and b, in src and out
                cuts_word = (not (equal[k] and equal[k + 1])) and (
                    0 < s < len(src) and _wordish(src[s - 1]) and _wordish(src[s])
                    or 0 < o < len(out) and _latin(out[o - 1]) and _latin(out[o]))
                if cuts_word or empty and k == 0:
                    raw[k:k + 2] = [[a[0], b[1], a[2], b[3]]]
                    equal[k:k + 2] = [False]
                    changed = True
                    break
            if empty and k > 0:
                p = raw[k - 1]
                raw[k - 1:k + 1] = [[p[0], a[1], p[2], a[3]]]
                equal[k - 1:k + 1] = [False]
                changed = True
                break
    out_stretches: list[Stretch] = []
    last_equal = False
    for r, eq in zip(raw, equal):           # unchanged runs cut above that stayed unchanged: one entry again
        if out_stretches and eq and last_equal:
            a = out_stretches[-1]
            out_stretches[-1] = (a[0], r[1], a[2], r[3])
        else:
            out_stretches.append(tuple(r))
        last_equal = eq
    return out_stretches


def compose(stretches: list[Stretch], spans: list[tuple[int, int]], out_offset: int = 0) -> list[Stretch]:
    """Stretches over (out, src) where ``spans[i]`` is where src character ``i`` came from in the request text →
    stretches over (out + ``out_offset``, request text)."""
    result = []
    for oa, ob, sa, sb in stretches:
        if sa < sb:
            ra, rb = spans[sa][0], spans[sb - 1][1]
        else:                                   # nothing in src (only when src is empty): an empty source span
            ra = rb = spans[sa][0] if sa < len(spans) else (spans[-1][1] if spans else 0)
        result.append((oa + out_offset, ob + out_offset, ra, rb))
    return result

"""services/gateway/alignment.py: the decoder's timings over normalized text → the caller's entries over the text it
sent. A stretch read as a whole (9:45 → 九点四十五分) is one entry, held until all of it is timed; every character
gets an entry; what was heard follows the played position."""
from __future__ import annotations

from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2

from services.gateway.alignment import SegmentAligner, heard_end, source_groups

SOURCE = "约9:45到"
NORMALIZED = "约九点四十五分到"


def timing(a, b, start, end, silent=False):
    return decoder_pb2.Timing(span=frontend_pb2.Span(start=a, end=b), start_sample=start, end_sample=end,
                              silent=silent)


def smap(*items):
    return [frontend_pb2.SourceMap(normalized=frontend_pb2.Span(start=a, end=b),
                                   source=frontend_pb2.Span(start=c, end=d)) for a, b, c, d in items]


def aligner(groups, base=10):
    for g in groups:
        g.s_start += base
        g.s_end += base
    return SegmentAligner((base, base + len(SOURCE)), groups, lambda s: s / 10)


def per_char_timings():
    return [timing(i, i + 1, 100 * i, 100 * (i + 1)) for i in range(len(NORMALIZED))]


def test_a_normalized_stretch_is_one_entry_held_until_all_of_it_is_timed():
    for groups in (source_groups(NORMALIZED, smap((0, 1, 0, 1), (1, 7, 1, 5), (7, 8, 5, 6)), SOURCE, 0),
                   source_groups(NORMALIZED, [], SOURCE, 0)):       # the same from matching the two texts
        al = aligner(groups)
        t = per_char_timings()
        assert [(e.start, e.end) for e in al.add(t[:3])] == [(10, 11)]     # 约; 九点 held: 9:45 is not all timed
        out = al.add(t[3:7])
        assert [(e.start, e.end, e.start_ms, e.end_ms) for e in out] == [(11, 15, 10.0, 70.0)]
        assert [(e.start, e.end) for e in al.add(t[7:]) + al.end(80.0)] == [(15, 16)]


def test_an_unchanged_run_sharing_one_map_entry_is_one_stretch_per_character():
    groups = source_groups("开始九点", smap((0, 2, 0, 2), (2, 4, 2, 6)), "开始9:45", 0)
    assert [(g.n_start, g.n_end, g.s_start, g.s_end) for g in groups] == [(0, 1, 0, 1), (1, 2, 1, 2), (2, 4, 2, 6)]


def test_every_character_gets_an_entry_and_heard_follows_the_played_position():
    source, normalized = "他说“好”", "他说好"
    groups = source_groups(normalized, [], source, 0)
    al = SegmentAligner((0, len(source)), groups, lambda s: float(s))
    entries = al.add([timing(0, 1, 0, 10), timing(1, 2, 10, 20), timing(2, 3, 20, 30)]) + al.end(40.0)
    assert [(e.start, e.start_ms, e.end_ms, e.silent) for e in entries] == [
        (0, 0, 10, False), (1, 10, 20, False), (2, 20, 20, True), (3, 20, 30, False), (4, 30, 30, True)]
    assert heard_end(entries, 19.0, 0) == 1
    assert heard_end(entries, 20.0, 0) == 3          # the opening quote sits at the end of 说
    assert heard_end(entries, 30.0, 0) == 5

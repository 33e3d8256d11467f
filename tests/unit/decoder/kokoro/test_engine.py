"""The Kokoro engine, run for real on the model assembled from its PyPI parts."""
import asyncio

import numpy as np
import pytest

from services.decoder.engine.base import SegmentInput, StreamOptions, Voice, WordInput
from services.decoder.engine.kokoro.engine import KokoroEngine
from services.decoder.engine.kokoro.model import prepare_model, split_phonemes
from services.decoder.engine.kokoro.settings import KokoroSettings
from shared.errors import InvalidArgument, ResourceExhausted


def zh(text, *pinyin):
    """A segment of Chinese words (each word's pinyin, spoken tones) and marks, as the frontend sends it."""
    words, k = [], 0
    for w, p in zip(text, pinyin):
        words.append(WordInput(w, "punct" if p is None else "zh", [] if p is None else p.split(), span=(k, k + len(w))))
        k += len(w)
    return "".join(text), words


HELLO = SegmentInput(0, "你好，", *zh(["你", "好", "，"], "ni2", "hao3", None))
WORLD = SegmentInput(1, "世界。", *zh(["世界", "。"], "shi4 jie4", None))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = KokoroEngine(KokoroSettings(model_dir="models/kokoro", max_streams=3, chunk_ms=200, queue_chunks=2,
                                      min_streams=3))
    asyncio.run(eng.warmup())
    return eng


async def collect(stream):
    return [c async for c in stream.chunks()]


def test_model_assembly_verifies_checksum():
    path = prepare_model("models/kokoro")
    assert path.stat().st_size > 80_000_000


def test_split_phonemes_respects_limit_and_keeps_content():
    text = " ".join(["ni↗ xau↓,"] * 200)
    pieces = split_phonemes(text, limit=100)
    assert all(0 < len(p) <= 100 for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_split_phonemes_cuts_an_unbroken_run():
    pieces = split_phonemes("a" * 250, limit=100)
    assert [len(p) for p in pieces] == [100, 100, 50]


async def test_stream_yields_segments_in_order_with_segment_ends(engine):
    stream = engine.open_stream(Voice(), StreamOptions())
    try:
        stream.feed(HELLO)
        stream.feed(WORLD)
        stream.end()
        chunks = await collect(stream)
    finally:
        await stream.close()
    assert [c.segment_index for c in chunks] == sorted(c.segment_index for c in chunks)
    assert {c.segment_index for c in chunks} == {0, 1}
    assert [c.segment_index for c in chunks if c.segment_end] == [0, 1]
    audio = np.concatenate([c.audio for c in chunks])
    assert len(audio) / 24000 > 0.8 and np.abs(audio).max() > 0.05
    assert engine.stats().active_streams == 0


async def test_same_input_gives_identical_audio(engine):
    outs = []
    for _ in range(2):
        stream = engine.open_stream(Voice(), StreamOptions(seed=7))
        stream.feed(HELLO)
        stream.end()
        outs.append(np.concatenate([c.audio for c in await collect(stream)]))
        await stream.close()
    assert np.array_equal(outs[0], outs[1])


async def test_first_segment_audio_arrives_before_later_segments_are_fed(engine):
    stream = engine.open_stream(Voice(), StreamOptions())
    try:
        stream.feed(HELLO)
        it = stream.chunks().__aiter__()
        first = await asyncio.wait_for(it.__anext__(), 30)
        assert first.segment_index == 0
        stream.feed(WORLD)
        stream.end()
        rest = [c async for c in it]
        assert rest[-1].segment_index == 1
    finally:
        await stream.close()


async def test_slow_reader_bounds_buffered_audio(engine):
    stream = engine.open_stream(Voice(), StreamOptions())
    try:
        stream.feed(SegmentInput(0, "长句", *zh(["你", "好", "，"] * 30, *["ni2", "hao3", None] * 30)))
        stream.end()
        it = stream.chunks().__aiter__()
        await it.__anext__()                       # the producer is now running; read nothing more
        for _ in range(1500):                      # bounded polling until its queue to the reader is full
            if engine.stats().stalled_streams:
                break
            await asyncio.sleep(0.02)
        stats = engine.stats()
        assert stats.stalled_streams == 1
        # what the stats count is exactly the audio of the chunks waiting in the full queue, taken next
        queued = [await it.__anext__() for _ in range(engine.settings.queue_chunks)]
        assert stats.buffered_bytes == sum(c.audio.nbytes for c in queued) > 0
        rest = [c async for c in it]
        assert rest and engine.stats().buffered_bytes == 0
    finally:
        await stream.close()


async def test_unknown_voice_is_invalid_argument(engine):
    with pytest.raises(InvalidArgument, match="config.voice"):
        engine.open_stream(Voice(name="nobody"), StreamOptions())


async def test_cloned_voice_is_refused_with_a_pointer_to_glmtts(engine):
    with pytest.raises(InvalidArgument, match="glmtts"):
        engine.open_stream(Voice(embedding=np.zeros(192, np.float32)), StreamOptions())


async def test_admission_limit_and_release(engine):
    streams = [engine.open_stream(Voice(), StreamOptions()) for _ in range(3)]
    with pytest.raises(ResourceExhausted) as exc:
        engine.open_stream(Voice(), StreamOptions())
    assert exc.value.retry_after_s > 0
    for s in streams:
        await s.close()
    assert engine.stats().active_streams == 0
    again = engine.open_stream(Voice(), StreamOptions())
    await again.close()


async def test_close_while_synthesizing_cancels_and_frees(engine):
    for _ in range(20):
        stream = engine.open_stream(Voice(), StreamOptions())
        stream.feed(HELLO)
        await stream.close()
        await stream.close()                     # idempotent
    assert engine.stats().active_streams == 0

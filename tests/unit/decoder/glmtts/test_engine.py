"""The glmtts engine on a tiny random checkpoint: streaming, KV cache reuse, batching, admission, cancellation."""
import gc
import os
import threading

import numpy as np
import pytest

from services.decoder.engine.base import EngineStats, SegmentInput, StreamOptions, Voice
from services.decoder.engine.glmtts.engine import GLMTTSEngine
from services.decoder.engine.glmtts.settings import GLMTTSSettings
from shared.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from tests.procs import wait_until


def make_engine(path, **kw):
    kw.setdefault("max_token_ratio", 3.0)      # a random LM rarely ends audio by itself: bound segments tightly
    kw.setdefault("chunk_schedule", (10, 20))
    kw.setdefault("n_timesteps", 4)
    kw.setdefault("lookahead", (0,))            # chunk counts below follow the schedule exactly (look-ahead: test_acoustic_modes)
    e = GLMTTSEngine(GLMTTSSettings(path=str(path), **kw))
    e.load()
    return e


def shutdown(e):
    e.scheduler.stop()
    for jobs, worker in ((e._jobs, e._worker), (e._prompt_jobs, e._prompt_worker)):
        jobs.put(None)
        worker.join(10)


@pytest.fixture(scope="module")
def engine(glmtts_checkpoint):
    e = make_engine(glmtts_checkpoint)
    yield e
    try:   # after every test of the module: each stream gone, each KV block back in the pool
        wait_until(lambda: e.stats().active_streams == 0 and e.scheduler.active() == 0, 30,
                   "the module's streams to leave")
        assert e.lm.pool.free_blocks == e.lm.pool.n_blocks
    finally:
        shutdown(e)


def seg(i, text):
    return SegmentInput(index=i, text=text, normalized=text)


async def run(engine, texts, voice=None, **opts):
    stream = engine.open_stream(voice or Voice(), StreamOptions(**opts))
    for i, t in enumerate(texts):
        stream.feed(seg(i, t))
    stream.end()
    try:
        chunks = [c async for c in stream.chunks()]
    finally:
        await stream.close()
    return chunks, stream.state


def audio_of(chunks, index=None):
    parts = [c.audio for c in chunks if index is None or c.segment_index == index]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


async def test_chunks_follow_the_token_schedule(engine):
    chunks, state = await run(engine, ["你好世界"], seed=3)
    # the LM reads "你好世界。" with 好 as phonemes (lm_text.py): 15 text ids × max ratio 3 = 45 tokens
    assert [c.tokens for c in chunks] == [10, 20, 15]
    assert len(state.history[0].tokens) == 45
    assert chunks[-1].segment_end and not any(c.segment_end for c in chunks[:-1])
    assert all(c.sample_rate == 24000 for c in chunks)
    # 25 tokens per second of audio: 45 tokens → 1.8 s
    assert len(audio_of(chunks)) == 45 * 24000 // 25


async def test_streamed_audio_equals_the_segment_rendered_at_once(engine):
    chunks, state = await run(engine, ["今天天气不错"], seed=11, chunk_size=7)
    streamed = audio_of(chunks)
    s = state.history[0]
    whole = engine.acoustic.render_full(state.prompt, state.seed, 0, s.tokens, s.max_len, state.stream.blocks)
    assert len(streamed) == len(whole)
    diff = np.abs(streamed - whole)
    seams = np.zeros(len(whole), bool)
    hold, fade = engine.acoustic.holdback, engine.acoustic.fade
    pos = 0
    for c in chunks[:-1]:
        pos += len(c.audio)
        seams[max(0, pos - hold - fade): pos + hold + fade] = True
    assert seams.any() and not seams.all()
    assert diff[~seams].max() < 1e-4, diff[~seams].max()
    assert diff[seams].max() < 1e-3, diff[seams].max()      # cross-fades between renders that agree closely


async def test_same_seed_same_audio_and_other_seed_other_audio(engine):
    a, _ = await run(engine, ["一二三"], seed=5)
    b, _ = await run(engine, ["一二三"], seed=5)
    c, _ = await run(engine, ["一二三"], seed=6)
    assert np.array_equal(audio_of(a), audio_of(b))
    assert not np.array_equal(audio_of(a), audio_of(c))


async def test_without_kv_cache_the_tokens_are_the_same(engine):
    _, cached = await run(engine, ["你好", "世界"], seed=9)
    _, uncached = await run(engine, ["你好", "世界"], seed=9, use_cache=False)
    assert [s.tokens for s in cached.history] == [s.tokens for s in uncached.history]
    assert uncached.reused_tokens == 0


async def test_segment_two_is_decoded_with_segment_one_context_cached(engine):
    _, state = await run(engine, ["你好", "世界"], seed=9)
    prompt_text = len(state.prompt.text_ids)
    first_text = len(state.history[0].text_ids)
    # segment 2's input begins with [prompt text, segment 1 text]: found in the cache, not recomputed
    assert state.reused_tokens == prompt_text + first_text
    assert state.kv is None                   # freed when the stream closed


async def test_four_concurrent_streams_decode_like_each_alone(engine):
    import asyncio

    texts = ["你好", "世界和平", "abc", "一"]
    alone = [(await run(engine, [t], seed=i))[1].history[0].tokens for i, t in enumerate(texts)]
    steps = engine.scheduler.steps
    together = await asyncio.gather(*(run(engine, [t], seed=i) for i, t in enumerate(texts)))
    assert [st.history[0].tokens for _, st in together] == alone
    passes = engine.scheduler.steps - steps
    assert passes < sum(len(t) for t in alone)   # passes were shared: fewer passes than tokens


async def test_cloned_voice_uses_the_speech_tokenizer(engine):
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    emb = rng.standard_normal(192).astype(np.float32)
    voice = Voice(reference_id="ref-1", embedding=emb, prompt_pcm16k=pcm, prompt_text="参考音频")
    chunks, state = await run(engine, ["你好"], voice=voice, seed=1)
    assert len(state.prompt.speech_tokens) == 50          # 2 s of prompt audio at 25 tokens/s
    assert state.prompt.feat.shape[1] == 100              # 2 mel frames per prompt token
    assert len(audio_of(chunks)) > 0


async def test_a_checkpoint_without_voices_or_speech_tokenizer_loads_and_says_what_is_missing(
        glmtts_checkpoint, tmp_path):
    for part in ("llm", "vq32k-phoneme-tokenizer", "flow", "hift"):   # like the published one: no voices/
        (tmp_path / part).symlink_to(glmtts_checkpoint / part)
    e = GLMTTSEngine(GLMTTSSettings(path=str(tmp_path), max_token_ratio=3.0, n_timesteps=2))
    await e.warmup()
    try:
        assert e.voices() == [] and e.acoustic.tokenizer is None
        with pytest.raises(InvalidArgument, match="send reference audio"):
            e.open_stream(Voice(), StreamOptions())
        voice = Voice(reference_id="ref-2", embedding=np.ones(192, np.float32), prompt_pcm16k=np.zeros(16000, np.float32))
        with pytest.raises(FailedPrecondition, match="speech_tokenizer"):
            await run(e, ["你好"], voice=voice)
        assert e.stats().active_streams == 0
    finally:
        shutdown(e)


async def test_bad_voice_and_speed_are_invalid_arguments(engine):
    with pytest.raises(InvalidArgument, match="config.voice"):
        engine.open_stream(Voice(name="nobody"), StreamOptions())
    with pytest.raises(InvalidArgument, match="config.speed"):
        engine.open_stream(Voice(), StreamOptions(speed=1.5))


async def test_admission_is_bounded_by_the_cache_budget(glmtts_checkpoint):
    e = make_engine(glmtts_checkpoint, max_streams=8, max_tokens_per_stream=512,
                    cache_budget_bytes=0)
    per_stream = 512 * e.lm.bytes_per_token
    shutdown(e)
    e = make_engine(glmtts_checkpoint, max_streams=8, max_tokens_per_stream=512,
                    cache_budget_bytes=2 * per_stream + 1)
    try:
        assert e.max_streams == 2
        a = e.open_stream(Voice(), StreamOptions())
        b = e.open_stream(Voice(), StreamOptions())
        with pytest.raises(ResourceExhausted) as exc:
            e.open_stream(Voice(), StreamOptions())
        assert exc.value.retry_after_s > 0
        await a.close()
        c = e.open_stream(Voice(), StreamOptions())      # a closed stream's room is free again at once
        await b.close()
        await c.close()
    finally:
        shutdown(e)


async def test_reader_that_does_not_read_stops_the_decoding(engine):
    stream = engine.open_stream(Voice(), StreamOptions(seed=2, chunk_size=1))
    stream.feed(seg(0, "一二三四五六七八九十"))
    stream.end()
    state = stream.state
    try:
        wait_until(lambda: state.ahead >= engine.settings.max_ahead, 30, "the stream to fill its read-ahead")
        assert not state.runnable()
        assert engine.stats().stalled_streams == 1
        produced = state.tokens_total
        await run(engine, ["你好"], seed=1)          # the scheduler keeps serving other streams meanwhile...
        assert state.tokens_total == produced       # ...and this one stays where its reader left it
        async for _ in stream.chunks():
            pass
        assert state.tokens_total > produced        # reading resumes it to the end
    finally:
        await stream.close()


async def test_clear_cache_frees_idle_streams(engine):
    stream = engine.open_stream(Voice(), StreamOptions(seed=2))
    stream.feed(seg(0, "你好"))
    chunks = []
    async for c in stream.chunks():
        chunks.append(c)
        if c.segment_end:
            break
    try:
        assert engine.stats().cache_bytes > 0
        freed, n = engine.clear_cache()
        assert n == 1 and freed > 0
        assert engine.stats().cache_bytes == 0
        stream.feed(seg(1, "世界"))               # a cleared stream recomputes its context and goes on
        stream.end()
        rest = [c async for c in stream.chunks()]
        assert rest[-1].segment_end and rest[-1].segment_index == 1
    finally:
        await stream.close()


async def test_idle_stream_state_expires_after_ttl(glmtts_checkpoint):
    e = make_engine(glmtts_checkpoint, idle_ttl_s=0.2)
    try:
        stream = e.open_stream(Voice(), StreamOptions(seed=2))
        stream.feed(seg(0, "你好"))
        async for c in stream.chunks():
            if c.segment_end:
                break
        wait_until(lambda: e.stats().cache_bytes == 0, 10, "the idle stream's cache to expire")
        assert stream.state.kv is None
        await stream.close()
    finally:
        shutdown(e)


def _rss_bytes():
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_thousand_cancelled_streams_leak_nothing(engine):
    async def cancelled(i, wait_first):
        stream = engine.open_stream(Voice(), StreamOptions(seed=i))
        stream.feed(seg(0, "你好世界"))
        if wait_first:
            async for _ in stream.chunks():
                break
        await stream.close()

    for i in range(50):                          # warm up allocator pools before taking the baseline
        await cancelled(i, i % 10 == 0)
    wait_until(lambda: engine.stats().active_streams == 0 and engine.scheduler.active() == 0, 30, "streams to leave")
    gc.collect()
    base = _rss_bytes()
    for i in range(1000):
        await cancelled(i, i % 25 == 0)
    wait_until(lambda: engine.scheduler.cache_bytes() == 0 and engine.scheduler.active() == 0, 30, "caches to be freed")
    gc.collect()
    assert engine.stats() == EngineStats(cache_budget_bytes=engine.cache_budget_bytes)
    assert engine.lm.pool.free_blocks == engine.lm.pool.n_blocks     # every block is back in the pool
    assert _rss_bytes() - base < 64 * 2**20, (base, _rss_bytes())


async def test_the_frontends_reading_reaches_the_lm_as_phoneme_tokens(engine):
    from services.decoder.engine.base import WordInput

    assert engine.phoneme_tokens                     # the tiny tokenizer holds them, like the published one
    words = [WordInput("银行", "zh", ["yin2", "hang2"], span=(0, 2), citation=["yin2", "hang2"])]
    stream = engine.open_stream(Voice(), StreamOptions(seed=1))
    try:
        stream.feed(SegmentInput(index=0, text="银行", normalized="银行", words=words))
        stream.end()
        _ = [c async for c in stream.chunks()]
    finally:
        await stream.close()
    assert stream.state.history[0].text_ids == engine.lm.encode_text("银<|H|><|ANG2|>。")    # lm_text.py
    assert engine.lm.has_tokens(["<|H|>", "<|ANG2|>"])


def _cloned_voice(ref, emb_seed, pcm_seed=0):
    rng = np.random.default_rng(pcm_seed)
    t = np.arange(32000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    emb = np.random.default_rng(100 + emb_seed).standard_normal(192).astype(np.float32)
    return Voice(reference_id=ref, embedding=emb, prompt_pcm16k=pcm, prompt_text="参考音频")


async def test_the_speaker_embedding_conditions_the_flow(engine):
    """Same prompt audio, same text, same seed; only the speaker embedding differs: the LM tokens are the same (the
    embedding does not enter the LM) but the audio differs, and so does the digest of what entered the flow."""
    a = engine.open_stream(_cloned_voice("emb-a", 1), StreamOptions(seed=4))
    b = engine.open_stream(_cloned_voice("emb-b", 2), StreamOptions(seed=4))
    a2 = engine.open_stream(_cloned_voice("emb-a", 1), StreamOptions(seed=4))
    out = []
    for s in (a, b, a2):
        s.feed(seg(0, "你好"))
        s.end()
        try:
            out.append(audio_of([c async for c in s.chunks()]))
        finally:
            await s.close()
    assert a.state.history[0].tokens == b.state.history[0].tokens
    assert not np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])
    assert a.conditioning and a.conditioning != b.conditioning and a.conditioning == a2.conditioning
    assert a.voice_name == "ref:emb-a"


async def test_a_voice_known_by_reference_needs_no_audio_and_an_unknown_one_is_not_found(engine):
    from shared.errors import NotFound

    full = _cloned_voice("by-ref", 3)
    chunks, _ = await run(engine, ["你好"], voice=full, seed=2)
    bare = Voice(reference_id="by-ref", prompt_text="参考音频")
    again, _ = await run(engine, ["你好"], voice=bare, seed=2)
    assert np.array_equal(audio_of(chunks), audio_of(again))
    with pytest.raises(NotFound, match="prompt unknown"):
        engine.open_stream(Voice(reference_id="never-sent"), StreamOptions())
    with pytest.raises(InvalidArgument, match="config.speaker"):
        engine.open_stream(Voice(embedding=np.ones(192, np.float32)), StreamOptions())


async def test_a_new_voice_is_built_off_the_lm_thread(engine, monkeypatch):
    """While a new cloned voice's prompt is being built (held here until released), another stream decodes to
    its end; then the held stream goes on."""
    import asyncio
    import threading

    release, building = threading.Event(), threading.Event()
    real = engine.acoustic._build_prompt

    def slow_build(voice, encode_text):
        if voice.reference_id == "slow-voice":
            building.set()
            release.wait(120)
        return real(voice, encode_text)

    await run(engine, ["你"], seed=1)        # the default voice's prompt is built (one prompt thread: builds queue)
    monkeypatch.setattr(engine.acoustic, "_build_prompt", slow_build)
    slow = asyncio.ensure_future(run(engine, ["你好"], voice=_cloned_voice("slow-voice", 5), seed=1))
    try:
        await asyncio.to_thread(building.wait, 120)
        assert building.is_set()
        other, _ = await run(engine, ["世界"], seed=1)        # not stalled behind the build
        assert other[-1].segment_end and not slow.done()
    finally:
        release.set()
    chunks, state = await slow
    assert chunks[-1].segment_end and len(state.prompt.speech_tokens) == 50


async def test_a_stream_closed_during_its_pass_is_counted_until_the_pass_returns_its_blocks(engine, monkeypatch):
    """The 1000-cancel test once found 7 of 2048 blocks out of the pool after it: a stream closed during a pass
    was no longer counted by the scheduler (active(), cache_bytes()) while that pass still held its blocks."""
    inside, go = threading.Event(), threading.Event()
    real = engine.lm.packed_forward

    def held(items):                 # the LM pass of the stream below stops here until the test lets it go
        out = real(items)
        if not go.is_set():
            inside.set()
            go.wait(30)
        return out

    monkeypatch.setattr(engine.lm, "packed_forward", held)
    pool = engine.lm.pool
    stream = engine.open_stream(Voice(), StreamOptions(seed=3))
    stream.feed(seg(0, "你好世界"))
    try:
        assert inside.wait(30)
        await stream.close()                      # the reader leaves while the pass holds the stream's blocks
        assert pool.free_blocks < pool.n_blocks
        assert engine.scheduler.active() == 1
        assert engine.stats().cache_bytes == (pool.n_blocks - pool.free_blocks) * pool.block_bytes
    finally:
        go.set()
    wait_until(lambda: engine.scheduler.active() == 0, 30, "the closed stream's pass to end")
    assert pool.free_blocks == pool.n_blocks and engine.stats().cache_bytes == 0

"""The speech LM on a tiny random checkpoint: the packed step over the paged KV cache against transformers' own
no-cache forward and against the per-stream attention loop it replaced."""
import pytest
import torch
import torch.nn.functional as F

from services.decoder.engine.glmtts.checkpoint import Layout
from services.decoder.engine.glmtts.lm import SamplingParams, SpeechLM
from services.decoder.engine.glmtts.reference import ContiguousKV, per_stream_forward
from shared.errors import ResourceExhausted

GREEDY = SamplingParams(greedy=True)
POOL_BLOCKS = 512


@pytest.fixture(scope="module")
def lm(glmtts_checkpoint):
    layout = Layout.of(glmtts_checkpoint)
    lm = SpeechLM.load(layout.llm, layout.tokenizer)
    lm.allocate_cache(POOL_BLOCKS)
    return lm


@pytest.fixture(autouse=True)
def _pool_is_left_empty(lm):
    yield
    assert lm.pool.free_blocks == POOL_BLOCKS        # every test frees what it took


def _prompt(lm, text="你好，世界。"):
    return lm.encode_text(text) + [lm.boa] + lm.speech_ids([5, 17, 300, 4000])


def _decode_cached(lm, ids, n, params=GREEDY, seed=0, kv=None, free=True):
    kv = kv or lm.new_cache()
    gen = torch.Generator().manual_seed(seed)
    out, feed = [], ids
    for _ in range(n):
        logits = lm.packed_forward([(kv, feed)])[0]
        tok = lm.sample(logits, out, params, gen, allow_end=False)
        out.append(tok)
        feed = [lm.ats + tok]
    if free:
        kv.free()
    return out, kv


def _decode_uncached(lm, ids, n, params=GREEDY, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out, seq = [], list(ids)
    for _ in range(n):
        tok = lm.sample(lm.full_forward(seq), out, params, gen, allow_end=False)
        out.append(tok)
        seq.append(lm.ats + tok)
    return out


def test_special_tokens_are_the_published_ones(lm):
    assert lm.ate - lm.ats == 32767
    assert lm.tokenizer.convert_ids_to_tokens(lm.boa) == "<|begin_of_audio|>"
    assert lm.tokenizer.convert_ids_to_tokens(lm.eoa) == "<|user|>"


def test_packed_forward_matches_transformers_logits(lm):
    ids = _prompt(lm)
    kv = lm.new_cache()
    cached = lm.packed_forward([(kv, ids)])[0]
    assert kv.length == len(ids)
    kv.free()
    torch.testing.assert_close(cached, lm.full_forward(ids), rtol=1e-4, atol=1e-4)


def test_greedy_decoding_with_and_without_kv_cache_gives_identical_tokens(lm):
    ids = _prompt(lm)
    cached, _ = _decode_cached(lm, ids, 40)
    assert cached == _decode_uncached(lm, ids, 40)
    assert len(set(cached)) > 1


def test_seeded_sampling_with_and_without_kv_cache_gives_identical_tokens(lm):
    ids = _prompt(lm, "今天天气不错")
    params = SamplingParams()
    cached, _ = _decode_cached(lm, ids, 30, params, seed=7)
    assert cached == _decode_uncached(lm, ids, 30, params, seed=7)


def test_batched_steps_of_four_streams_equal_each_stream_alone(lm):
    prompts = [_prompt(lm, t) for t in ("一", "二二二二", "hello there", "三月三日，晴。")]
    alone = [_decode_cached(lm, p, 30)[0] for p in prompts]
    caches = [lm.new_cache() for _ in prompts]
    feeds = list(prompts)
    outs = [[] for _ in prompts]
    for _ in range(30):   # prefills of different lengths and single-token steps share each pass
        logits = lm.packed_forward(list(zip(caches, feeds)))
        for i, row in enumerate(logits):
            tok = lm.sample(row, outs[i], GREEDY, None, allow_end=False)
            outs[i].append(tok)
            feeds[i] = [lm.ats + tok]
    for kv in caches:
        kv.free()
    assert outs == alone


def test_cache_crop_reuses_a_common_prefix(lm):
    ids = _prompt(lm)
    _, kv = _decode_cached(lm, ids, 5, free=False)
    keep = len(lm.encode_text("你好，世界。"))
    kv.crop(keep)
    assert len(kv.blocks) == lm.blocks_for(keep)          # the blocks past the prefix went back to the pool
    other = lm.encode_text("再见") + [lm.boa]
    logits = lm.packed_forward([(kv, other)])[0]
    kv.free()
    full = lm.full_forward(lm.encode_text("你好，世界。") + other)
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)


def test_cache_takes_blocks_from_the_pool_and_gives_them_back(lm):
    kv = lm.new_cache()
    ids = _prompt(lm)
    lm.packed_forward([(kv, ids)])
    assert len(kv.blocks) == lm.blocks_for(len(ids))
    assert kv.nbytes == len(kv.blocks) * lm.block_bytes
    assert lm.pool.free_blocks == POOL_BLOCKS - len(kv.blocks)
    kv.free()
    assert kv.nbytes == 0 and kv.length == 0 and lm.pool.free_blocks == POOL_BLOCKS


def test_end_of_audio_is_masked_until_allowed(lm):
    logits = torch.full((lm.model.lm_head.out_features,), -10.0)
    logits[lm.eoa] = 10.0
    assert lm.sample(logits, [], GREEDY, None, allow_end=True) == -1
    assert lm.sample(logits, [], GREEDY, None, allow_end=False) >= 0


def test_repetition_aware_sampling_escapes_a_loop(lm):
    logits = torch.full((lm.model.lm_head.out_features,), -30.0)
    logits[lm.ats + 42] = 30.0           # the nucleus holds only token 42
    logits[lm.ats: lm.ate + 1] += torch.linspace(0, 1, 32768)
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(top_k=1)
    assert lm.sample(logits, [1, 2, 3], params, gen, allow_end=False) == 42
    # 42 already in the window: the pick falls back to the full distribution (still 42 almost surely here,
    # so flatten it to see the fallback draw something else)
    flat = torch.zeros_like(logits)
    flat[lm.ats + 42] = 5.0
    picks = {lm.sample(flat, [42] * 10, params, gen, allow_end=False) for _ in range(20)}
    assert picks - {42}


def test_growing_a_stream_adds_blocks_and_moves_nothing(lm):
    bs = lm.block_size
    kv = lm.new_cache()
    lm.packed_forward([(kv, _prompt(lm)[: bs - 1])])
    first = list(kv.blocks)
    keys = lm.pool.k[:, :, first].clone()           # [layers, kv_heads, its blocks, block_size, head_dim]
    for t in range(bs + 2):                     # crosses two block boundaries
        lm.packed_forward([(kv, [lm.ats + t])])
    assert kv.blocks[: len(first)] == first and len(kv.blocks) == len(first) + 2
    assert torch.equal(lm.pool.k[:, :, first][..., : bs - 1, :], keys[..., : bs - 1, :])   # old tokens stay where they were
    kv.free()


def test_a_stream_stops_at_its_token_limit_and_the_pool_at_its_size(lm):
    kv = lm.new_cache(max_tokens=300)
    kv.reserve(300)
    assert len(kv.blocks) == lm.blocks_for(300)
    with pytest.raises(ResourceExhausted):
        kv.reserve(301)                          # the pod reserved 300 tokens for this stream, no more
    kv.free()
    big = lm.new_cache()
    with pytest.raises(ResourceExhausted):
        big.reserve((POOL_BLOCKS + 1) * lm.block_size)
    assert big.blocks == [] and lm.pool.free_blocks == POOL_BLOCKS     # a refused request takes nothing


def _random_ids(lm, n, gen):
    return torch.randint(0, lm.model.lm_head.out_features, (n,), generator=gen).tolist()


@pytest.fixture(scope="module")
def gqa_lm(glmtts_checkpoint):
    """A small Llama with grouped-query attention (8 query heads on 2 KV heads), the published LM's kind."""
    from transformers import LlamaConfig, LlamaForCausalLM

    layout = Layout.of(glmtts_checkpoint)
    base = SpeechLM.load(layout.llm, layout.tokenizer)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=base.model.config.vocab_size, hidden_size=128, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, intermediate_size=256, initializer_range=0.1,
                      max_position_embeddings=4096, attn_implementation="sdpa")
    lm = SpeechLM(LlamaForCausalLM(cfg), base.tokenizer)
    lm.allocate_cache(POOL_BLOCKS)
    return lm


@pytest.mark.parametrize("which", ["lm", "gqa_lm"])
def test_mixed_passes_equal_the_per_stream_path_and_transformers(which, request):
    """Prefills and single-token steps in one pass, streams of different lengths, streams joining and leaving
    between passes: the paged step gives the logits of the per-stream loop and of transformers' forward."""
    lm = request.getfixturevalue(which)
    gen = torch.Generator().manual_seed(1)
    bs = lm.block_size
    streams = {}                                    # name → (paged cache, reference cache, whole sequence)

    def join(name, n):
        streams[name] = (lm.new_cache(), ContiguousKV(lm), [])
        return name, _random_ids(lm, n, gen)

    def run_pass(feeds):
        paged = lm.packed_forward([(streams[k][0], ids) for k, ids in feeds])
        ref = per_stream_forward(lm, [(streams[k][1], ids) for k, ids in feeds])
        torch.testing.assert_close(paged, ref, rtol=1e-4, atol=1e-4)
        for (k, ids), row in zip(feeds, paged):
            streams[k][2].extend(ids)
            torch.testing.assert_close(row, lm.full_forward(streams[k][2]), rtol=1e-4, atol=1e-4)
        return paged

    run_pass([join("a", 3), join("b", 2 * bs + 5), join("c", 1)])
    for step in range(3):                           # decode steps, with a long prefill joining on step 1
        feeds = [(k, _random_ids(lm, 1, gen)) for k in streams]
        if step == 1:
            feeds.append(join("d", 3 * bs))
        run_pass(feeds)
    streams.pop("b")[0].free()                       # a stream leaves mid-batch...
    kv = streams["a"][0]
    kv.crop(2)                                       # ...another starts its next segment on a kept prefix
    streams["a"][1].crop(2)
    del streams["a"][2][2:]
    run_pass([("a", _random_ids(lm, bs + 3, gen)), ("c", _random_ids(lm, 1, gen)), join("e", 7),
              ("d", _random_ids(lm, 2, gen))])
    for k in list(streams):
        streams.pop(k)[0].free()
    assert lm.pool.free_blocks == POOL_BLOCKS


def test_attention_calls_per_layer_do_not_grow_with_the_streams(lm, monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*a, **kw):
        calls.append(a[0].shape[0])                 # streams in the call
        return sdpa(*a, **kw)

    caches = [lm.new_cache() for _ in range(9)]
    lm.packed_forward([(kv, [lm.ats + 1] * (i + 1)) for i, kv in enumerate(caches)])    # 9 prefills of 1..9
    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    lm.packed_forward([(kv, [lm.ats + 3]) for kv in caches])                                       # 9 steps
    decode, calls[:] = list(calls), []
    lm.packed_forward([(kv, [lm.ats + 2] * (1 if i % 3 else 4)) for i, kv in enumerate(caches)])   # mixed
    monkeypatch.undo()
    for kv in caches:
        kv.free()
    assert decode == [9] * lm.n_layers              # one call per layer for all nine single-token steps
    assert calls == [6, 3] * lm.n_layers            # mixed: one call for the 6 steps, one for the 3 prefills


def test_batched_sampling_gives_each_stream_the_token_its_own_sampling_would(lm):
    """sample_batch over [streams, vocab] = sample() row by row, with the same seeded generators: mixed sampling
    parameters (greedy, other top-k / top-p / temperature), end of audio allowed for some rows only, and histories
    that trigger the repetition-aware fallback draw."""
    vocab = lm.model.lm_head.out_features
    torch.manual_seed(3)
    kinds = [SamplingParams(), SamplingParams(), GREEDY, SamplingParams(top_k=5, top_p=0.5, temperature=0.7),
             SamplingParams(top_k=1), SamplingParams()]
    n = len(kinds)
    seeds = list(range(10, 10 + n))
    one = [torch.Generator().manual_seed(s) for s in seeds]
    batch = [torch.Generator().manual_seed(s) for s in seeds]
    hist_one, hist_batch = [[] for _ in range(n)], [[] for _ in range(n)]
    fallbacks = ends = 0
    for step in range(60):
        logits = torch.randn(n, vocab) * 3
        logits[:, lm.ats + 42] += 14.0                # a favourite token, so windows fill with it (RAS fallback)
        if step % 7 == 0:
            logits[:, lm.eoa] = 50.0                  # end of audio wins where it is allowed
        allow = [(r + step) % 3 != 0 for r in range(n)]
        want = [lm.sample(logits[r], hist_one[r], kinds[r], one[r], allow[r]) for r in range(n)]
        got = lm.sample_batch(logits, hist_batch, kinds, batch, allow)
        assert got == want, step
        # row 4 (top-k 1) picks 42 whenever 42 leads; anything else there came from the fallback draw
        fallbacks += 0 <= want[4] != 42 and int(logits[4, lm.ats:].argmax()) == 42
        ends += sum(tok < 0 for tok in want)
        for r, tok in enumerate(want):
            if tok >= 0:
                hist_one[r].append(tok)
                hist_batch[r].append(tok)
    assert fallbacks > 0 and ends > 0               # both paths were exercised
    assert [g.get_state().tolist() for g in one] == [g.get_state().tolist() for g in batch]

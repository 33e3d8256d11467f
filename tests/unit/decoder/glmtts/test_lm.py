"""The speech LM on a tiny random checkpoint: the packed, cached forward against transformers' own no-cache forward."""
import pytest
import torch

from services.decoder.engine.glmtts.checkpoint import Layout
from services.decoder.engine.glmtts.lm import SamplingParams, SpeechLM

GREEDY = SamplingParams(greedy=True)


@pytest.fixture(scope="module")
def lm(glmtts_checkpoint):
    layout = Layout.of(glmtts_checkpoint)
    return SpeechLM.load(layout.llm, layout.tokenizer)


def _prompt(lm, text="你好，世界。"):
    return lm.encode_text(text) + [lm.boa] + lm.speech_ids([5, 17, 300, 4000])


def _decode_cached(lm, ids, n, params=GREEDY, seed=0, kv=None):
    kv = kv or lm.new_cache()
    gen = torch.Generator().manual_seed(seed)
    out, feed = [], ids
    for _ in range(n):
        logits = lm.packed_forward([(kv, feed)])[0]
        tok = lm.sample(logits, out, params, gen, allow_end=False)
        out.append(tok)
        feed = [lm.ats + tok]
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
    assert outs == alone


def test_cache_crop_reuses_a_common_prefix(lm):
    ids = _prompt(lm)
    _, kv = _decode_cached(lm, ids, 5)
    keep = len(lm.encode_text("你好，世界。"))
    kv.crop(keep)
    other = lm.encode_text("再见") + [lm.boa]
    logits = lm.packed_forward([(kv, other)])[0]
    full = lm.full_forward(lm.encode_text("你好，世界。") + other)
    torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)


def test_cache_grows_in_blocks_and_frees(lm):
    kv = lm.new_cache()
    lm.packed_forward([(kv, _prompt(lm))])
    assert kv.nbytes == kv.capacity * lm.bytes_per_token
    kv.free()
    assert kv.nbytes == 0 and kv.length == 0


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


def test_cache_capacity_stops_at_the_streams_token_limit(lm):
    kv = lm.new_cache(max_tokens=300)
    kv.reserve(129)
    assert kv.capacity == 256                 # grows in blocks...
    kv.reserve(257)
    assert kv.capacity == 300                 # ...but never past what the pod budgeted for one stream
    assert kv.nbytes == 300 * lm.bytes_per_token

"""Offline (full attention) rendering for whole-text requests, and streaming block mode WITH look-ahead: measured
against the offline render on the reference pack's flow (published flags, official inputs)."""
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from services.decoder.engine.base import SegmentInput, StreamOptions, Voice
from services.decoder.engine.glmtts.acoustic import emit_schedule
from services.decoder.engine.glmtts.engine import GLMTTSEngine
from services.decoder.engine.glmtts.settings import GLMTTSSettings
from services.decoder.engine.glmtts.flow import load_flow
from services.decoder.settings import DecoderSettings

PACK = Path(__file__).resolve().parents[3] / "data" / "glmtts-reference" / "flow"


def test_emit_schedule():
    assert emit_schedule([15, 25, 50], [12, 25, 50]) == [27, 38, 75, 50]
    assert emit_schedule([15, 25, 50], 0) == [15, 25, 50, 50]
    assert emit_schedule([10], [12, 25, 50]) == [22, 23, 35, 10]


def _block_end_distance(flow, x, offline, blocks, lookahead):
    """Stream the pack's tokens one at a time; max |mel - offline| within 4 frames of every block end, overall max."""
    s = flow.stream(x["prompt_token"], x["prompt_feat"], x["embedding"], n_timesteps=10, block_pattern=blocks,
                    lookahead=lookahead, noise=x["noise"])
    pieces = []
    for t in range(x["token"].shape[1]):
        m = s.push(x["token"][:, t:t + 1])
        if m.shape[-1]:
            pieces.append(m)
    pieces.append(s.finish())
    mel = torch.cat(pieces, dim=-1)
    ends = list(itertools.accumulate(p.shape[-1] for p in pieces))[:-1]
    d = (mel - offline).abs()
    assert ends
    return max(float(d[:, :, max(0, e - 4): e + 4].max()) for e in ends), float(d.max())


@pytest.fixture(scope="module")
def pack_flow():
    flow = load_flow(PACK)
    x = load_file(str(PACK / "flow_inputs.safetensors"))
    off = flow.inference(x["token"], x["prompt_token"], x["prompt_feat"], x["embedding"], n_timesteps=10,
                         noise=x["noise"])
    assert float((off - load_file(str(PACK / "flow_outputs.safetensors"))["mel_offline"]).abs().max()) <= 1e-5
    return flow, x, off


def test_streaming_with_the_default_lookahead_is_close_to_offline(pack_flow):
    flow, x, off = pack_flow
    settings = DecoderSettings().glmtts
    blocks, lookahead = list(settings.chunk_schedule), list(settings.lookahead)
    at_ends, overall = _block_end_distance(flow, x, off, blocks, lookahead)
    assert at_ends <= 0.1 and overall <= 0.1, (at_ends, overall)          # measured 0.088 / 0.088
    assert emit_schedule(blocks, lookahead)[0] <= 16      # first chunk early: 16 tokens (27 before)
    # without look-ahead the block ends are far off (0.465): the look-ahead is what brings them close
    no_la, _ = _block_end_distance(flow, x, off, blocks, 0)
    assert no_la > 0.3, no_la


# ------------------------------------------------------------------------------------------- through the engine

@pytest.fixture(scope="module")
def engine(glmtts_checkpoint, tmp_path_factory):
    # the tiny checkpoint with the pack's flow (official init: attention matters, unlike in a N(0, 0.02) model)
    ckpt = tmp_path_factory.mktemp("ckpt-packflow")
    for entry in glmtts_checkpoint.iterdir():
        if entry.name != "flow":
            (ckpt / entry.name).symlink_to(entry)
    (ckpt / "flow").mkdir()
    for name in ("config.yaml", "flow.pt"):
        (ckpt / "flow" / name).symlink_to(PACK / name)
    # the checkpoint's CAM++: the decoder only hashes it (the speaker stage runs it; tests/unit/speaker)
    (ckpt / "frontend").mkdir()
    (ckpt / "frontend" / "campplus.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    e = GLMTTSEngine(GLMTTSSettings(path=str(ckpt), max_token_ratio=3.0, chunk_schedule=(10, 20), n_timesteps=4,
                                    lookahead=(6, 8)))
    e.load()
    yield e
    e.scheduler.stop()
    e._jobs.put(None)
    e._worker.join(10)


async def _run(engine, text, **opts):
    stream = engine.open_stream(Voice(), StreamOptions(**opts))
    stream.feed(SegmentInput(index=0, text=text, normalized=text))
    stream.end()
    try:
        chunks = [c async for c in stream.chunks()]
    finally:
        await stream.close()
    return chunks, stream.state


async def test_offline_request_renders_each_segment_whole_with_full_attention(engine):
    chunks, state = await _run(engine, "你好世界", seed=3, offline=True)
    assert len(chunks) == 1 and chunks[0].segment_end and chunks[0].tokens == 45     # 15 LM text ids x 3
    s = state.history[0]
    whole = engine.acoustic.render_offline(state.prompt, state.seed, 0, s.tokens, s.max_len)
    assert np.array_equal(chunks[0].audio, whole)
    # its mel is the full-attention one, not the block-mode one (the tiny vocoder hides the difference in audio)
    r = engine.acoustic.segment(state.prompt, state.seed, 0, s.max_len, [10, 20], offline=True)
    flow, p = engine.acoustic.flow, state.prompt
    args = (torch.tensor([s.tokens]), torch.tensor([p.speech_tokens]), p.feat, p.embedding)
    full = flow.inference(*args, n_timesteps=4, noise=r.noise)
    block = flow.inference(*args, n_timesteps=4, noise=r.noise, block_pattern=[10, 20], lookahead=[6, 8])
    assert torch.equal(r.mel(s.tokens), full)
    assert float((full - block).abs().max()) > 0.05


async def test_streaming_chunks_wait_for_the_lookahead(engine):
    chunks, state = await _run(engine, "你好世界", seed=3)
    # blocks 10, 20 with look-ahead 6, 8: chunks due at 16 and 38 tokens, the rest (of 45) at the end
    assert [c.tokens for c in chunks] == [16, 22, 7]
    s = state.history[0]
    whole = engine.acoustic.render_full(state.prompt, state.seed, 0, s.tokens, s.max_len, state.stream.blocks)
    streamed = np.concatenate([c.audio for c in chunks])
    assert len(streamed) == len(whole)
    assert np.abs(streamed - whole).max() < 1e-3


def test_cloned_prompt_mel_comes_from_the_24k_audio(engine):
    from services.decoder.engine.glmtts.mel import mel_spectrogram

    rng = np.random.default_rng(0)
    t = np.arange(48000) / 24000
    a24 = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * np.sin(2 * np.pi * 7600 * t)
           + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    a16 = a24[::3][: 32000 // 2 * 2]            # any 16 kHz stand-in: the tokens come from it, the mel must not
    voice = Voice(reference_id="r" * 64, embedding=rng.standard_normal(192).astype(np.float32),
                  prompt_pcm16k=a16, prompt_pcm24k=a24, prompt_text="你好", encoder=engine.speaker_encoder)
    p = engine.acoustic._build_prompt(voice, engine.lm.encode_text)
    n = len(p.speech_tokens)
    assert n > 0
    expected = mel_spectrogram(torch.from_numpy(a24))[:, :, : 2 * n].transpose(1, 2)
    assert torch.equal(p.feat, expected)


def test_engine_needs_the_checkpoints_speaker_encoder(engine):
    from shared.errors import FailedPrecondition
    from shared.speaker_encoders import campplus_onnx_id

    need = campplus_onnx_id(Path(engine.path) / "frontend" / "campplus.onnx")
    assert engine.speaker_encoder == need and need.startswith("campplus-onnx@")
    rng = np.random.default_rng(1)
    voice = Voice(reference_id="a" * 64, embedding=rng.standard_normal(192).astype(np.float32),
                  prompt_pcm16k=rng.standard_normal(16000).astype(np.float32) * 0.1, prompt_text="你好",
                  encoder="campplus@campplus-zh_en-common-advanced-v1")
    with pytest.raises(FailedPrecondition) as e:
        engine.open_stream(voice, StreamOptions(seed=0))
    assert need in e.value.message and "campplus@campplus-zh_en" in e.value.message


async def test_prompt_cache_key_is_reference_encoder_and_transcript(engine):
    rng = np.random.default_rng(2)
    base = dict(reference_id="b" * 64, embedding=rng.standard_normal(192).astype(np.float32),
                prompt_pcm16k=(rng.standard_normal(16000) * 0.1).astype(np.float32), encoder=engine.speaker_encoder)
    one = engine.acoustic.prompt(Voice(prompt_text="你好", **base), engine.lm.encode_text)
    again = engine.acoustic.prompt(Voice(prompt_text="你好", **base), engine.lm.encode_text)
    other = engine.acoustic.prompt(Voice(prompt_text="世界", **base), engine.lm.encode_text)
    assert again is one                                   # cached
    assert other is not one and other.text_ids != one.text_ids
    # the same audio and transcript embedded by another encoder is another prompt (its own embedding), never the
    # cached one
    emb2 = rng.standard_normal(192).astype(np.float32)
    enc2 = engine.acoustic.prompt(Voice(prompt_text="你好", **{**base, "encoder": "campplus-onnx@ffffffffffffffff",
                                                             "embedding": emb2}), engine.lm.encode_text)
    assert enc2 is not one and not torch.equal(enc2.embedding, one.embedding)
    assert engine.acoustic.prompt_key(Voice(prompt_text="你好", **base)) != engine.acoustic.prompt_key(
        Voice(prompt_text="你好", **{**base, "encoder": "campplus-onnx@ffffffffffffffff"}))

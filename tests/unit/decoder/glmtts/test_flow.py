"""The glmtts flow model: checkpoint layout round trip, output shapes, determinism, block-mode prefix stability."""
from __future__ import annotations

import pytest
import torch

from services.decoder.engine.glmtts.flow import (
    Flow,
    FlowCheckpointError,
    block_attention_mask,
    load_flow,
    read_flow_config,
    write_tiny_flow,
)

VOCAB = 64
STEPS = 3


@pytest.fixture(scope="module")
def flow_dir(tmp_path_factory):
    return write_tiny_flow(tmp_path_factory.mktemp("flow"), vocab_size=VOCAB, trans_dim=32, depth=2, heads=2,
                           dim_head=16, speech_token_dim=16, seed=3)


@pytest.fixture(scope="module")
def flow(flow_dir):
    return load_flow(flow_dir)


def _inputs(seed=0, n_tok=24, n_prompt=6):
    g = torch.Generator().manual_seed(seed)
    return dict(
        token=torch.randint(1, VOCAB, (1, n_tok), generator=g),
        prompt_token=torch.randint(1, VOCAB, (1, n_prompt), generator=g),
        prompt_feat=torch.randn(1, 2 * n_prompt, 80, generator=g),
        embedding=torch.randn(1, 192, generator=g),
        noise=torch.randn(1, 2 * (n_prompt + n_tok) + 40, 80, generator=g),
    )


def test_round_trip_is_strict_and_exact(flow_dir, flow, tmp_path):
    written = torch.load(flow_dir / "flow.pt", weights_only=True)
    assert set(written) == set(flow.state_dict())
    assert all(torch.equal(written[k], v) for k, v in flow.state_dict().items())
    # a few of the published names, so a real GLM-TTS flow.pt keeps loading
    for key in ("spk_embed_affine_layer.weight", "estimator.time_embed.time_mlp.0.weight",
                "estimator.text_emb_layer.text_blocks.3.grn.gamma", "estimator.emb_concator.conv_pos_embed.conv1d.2.weight",
                "estimator.transformer_blocks.1.attn.to_out.0.weight", "estimator.transformer_blocks.0.ff.ff.2.bias",
                "estimator.rotary_embed.inv_freq", "estimator.norm_out.linear.weight"):
        assert key in written, key
    assert flow.estimator.text_emb_layer.text_embed.weight.shape == (VOCAB + 1, 16)
    cfg = read_flow_config(flow_dir / "config.yaml")
    assert cfg["vocab_size"] == VOCAB and cfg["input_frame_rate"] == 25 and cfg["mel_framerate"] == 50
    # the {"model": state_dict} wrapping loads too
    wrapped = write_tiny_flow(tmp_path / "w", vocab_size=VOCAB, trans_dim=32, depth=1, heads=2, dim_head=16,
                              speech_token_dim=16, wrap_model_key=True)
    assert isinstance(load_flow(wrapped), Flow)


def test_published_sizes_are_derived_from_big_model(monkeypatch):
    import services.decoder.engine.glmtts.flow as flow_mod

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, **kw):
            super().__init__()
            seen.append(kw)

    monkeypatch.setattr(flow_mod, "DiT", Recorder)
    Flow(speech_token_dim=512, vocab_size=32768, input_frame_rate=25, mel_framerate=50)
    Flow(big_model=True, spkr_emb_adaLN=True, remove_spkr_concat_condition=True)
    small, big = seen
    assert (small["trans_dim"], small["depth"], small["heads"], small["dim_head"]) == (768, 18, 12, 64)
    assert (big["trans_dim"], big["depth"], big["heads"]) == (1024, 22, 16)
    assert small["condition_dim"] == 160 and big["condition_dim"] == 80
    assert small["text_emb_dim"] == 512 and small["text_vocab_size"] == 32768 and small["ff_mult"] == 2


def test_output_shape_and_prompt_handling(flow):
    x = _inputs()
    assert flow.frames_for(30) == 60
    mel = flow.inference(**x, n_timesteps=STEPS)
    assert mel.shape == (1, 80, 48) and mel.dtype == torch.float32 and torch.isfinite(mel).all()
    # no prompt: None or empty tensors
    x0 = dict(x, prompt_token=None, prompt_feat=None)
    assert flow.inference(**x0, n_timesteps=STEPS).shape == (1, 80, 48)
    x1 = dict(x, prompt_token=torch.zeros(1, 0, dtype=torch.long), prompt_feat=torch.zeros(1, 0, 80))
    assert torch.equal(flow.inference(**x1, n_timesteps=STEPS), flow.inference(**x0, n_timesteps=STEPS))
    assert flow.inference(**x1, n_timesteps=STEPS, block_pattern=[5]).shape == (1, 80, 48)


def test_fixed_noise_is_deterministic_and_random_noise_is_not(flow):
    x = _inputs(1)
    a = flow.inference(**x, n_timesteps=STEPS)
    b = flow.inference(**x, n_timesteps=STEPS)
    assert torch.equal(a, b)
    torch.manual_seed(0)
    c = flow.inference(**dict(x, noise=None), n_timesteps=STEPS)
    torch.manual_seed(0)
    d = flow.inference(**dict(x, noise=None), n_timesteps=STEPS)
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_block_mode_prefix_is_stable_when_tokens_are_appended(flow):
    x = _inputs(2, n_tok=30)
    full = flow.inference(**x, n_timesteps=STEPS, block_pattern=[4, 8])
    # blocks end at 4, 12, 20, 28 tokens; with 17 tokens the first two blocks (12 tokens → 24 frames) are complete
    short = flow.inference(**dict(x, token=x["token"][:, :17]), n_timesteps=STEPS, block_pattern=[4, 8])
    assert short.shape[-1] == 34
    assert torch.equal(short[..., :24], full[..., :24])
    assert not torch.equal(short[..., 24:], full[..., 24:34])     # the partial block does change
    # streamed in uneven pieces → the same mel as the whole call
    st = flow.stream(x["prompt_token"], x["prompt_feat"], x["embedding"], n_timesteps=STEPS,
                     block_pattern=[4, 8], noise=x["noise"])
    pieces = [st.push(x["token"][:, i:i + 7]) for i in range(0, 30, 7)] + [st.finish()]
    assert [p.shape[-1] for p in pieces] == [8, 16, 16, 16, 0, 4]
    assert torch.equal(torch.cat(pieces, -1), full)
    st.close()


def test_block_mode_with_lookahead(flow):
    x = _inputs(4, n_tok=30)
    full = flow.inference(**x, n_timesteps=STEPS, block_pattern=[6], lookahead=3)
    short = flow.inference(**dict(x, token=x["token"][:, :16]), n_timesteps=STEPS, block_pattern=[6], lookahead=3)
    assert torch.equal(short[..., :12], full[..., :12])           # block 1 (6 tokens) had its 3 tokens of context
    no_la = flow.inference(**x, n_timesteps=STEPS, block_pattern=[6])
    assert not torch.equal(no_la[..., :12], full[..., :12])


def test_attention_mask_blocks():
    m = block_attention_mask([2, 4], 8)
    # frame 0 (block 0, 1 frame of own future ≥ 1) sees 0..1; frame 1 needs 1 more → sees 0..2
    assert m[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert m[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert m[2].tolist() == [1] * 6 + [0, 0]
    assert m[5].tolist() == [1] * 8


def test_missing_or_mismatched_files_name_the_file(tmp_path, flow_dir):
    with pytest.raises(FlowCheckpointError, match="config.yaml"):
        load_flow(tmp_path)
    (tmp_path / "config.yaml").write_text((flow_dir / "config.yaml").read_text())
    with pytest.raises(FlowCheckpointError, match="flow.pt"):
        load_flow(tmp_path)
    # weights of a different size → a mismatch error naming both files
    other = write_tiny_flow(tmp_path / "other", vocab_size=VOCAB, trans_dim=48, depth=2, heads=2, dim_head=16,
                            speech_token_dim=16)
    (tmp_path / "flow.pt").write_bytes((other / "flow.pt").read_bytes())
    with pytest.raises(FlowCheckpointError, match=r"flow\.pt does not match .*config\.yaml"):
        load_flow(tmp_path)
    (tmp_path / "config.yaml").write_text("flow: {vocab_size: 3}\n")
    with pytest.raises(FlowCheckpointError, match="!new:flow.flow.Flow"):
        load_flow(tmp_path)


def test_config_references_are_resolved(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "sample_rate: 24000\ntoken_rate: 25\nhop: 480\n"
        "vocoder: !name:some.module.Vocoder\n"
        "flow: !new:flow.flow.Flow\n"
        "    vocab_size: 4096\n    input_frame_rate: !ref <token_rate>\n"
        "    mel_framerate: !ref <sample_rate> // <hop>\n    spkr_emb_adaLN: True\n    sigma: 1e-6\n")
    cfg = read_flow_config(tmp_path / "config.yaml")
    assert cfg == {"vocab_size": 4096, "input_frame_rate": 25, "mel_framerate": 50, "spkr_emb_adaLN": True,
                   "sigma": 1e-6}

"""HiFT vocoder of the glmtts engine: checkpoint layout, strict loading, output length, determinism, errors."""
from __future__ import annotations

import json

import pytest
import torch

from services.decoder.engine.glmtts import hift as H


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("glmtts") / "hift"
    H.write_tiny_hift(d, base_channels=64, seed=0)
    return d


@pytest.fixture(scope="module")
def vocoder(tiny_dir):
    return H.load_hift(tiny_dir)


def _mel(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 80, frames, generator=g) - 5.0


def test_published_layout_and_sizes():
    cfg = H.HiFTConfig()
    assert cfg.hop_length == 480 and cfg.sampling_rate == 24000
    with torch.device("meta"):
        sd = H.HiFTGenerator().state_dict()
    assert len(sd) == 328
    # a few keys and shapes of GLM-TTS's hift.pt (CosyVoice-2 HiFTGenerator, torch weight-norm parametrization)
    expect = {
        "m_source.l_linear.weight": (1, 9),
        "conv_pre.parametrizations.weight.original0": (512, 1, 1),
        "conv_pre.parametrizations.weight.original1": (512, 80, 7),
        "ups.0.parametrizations.weight.original0": (512, 1, 1),
        "ups.0.parametrizations.weight.original1": (512, 256, 16),
        "ups.2.parametrizations.weight.original1": (128, 64, 7),
        "source_downs.0.weight": (256, 18, 30),
        "source_downs.1.weight": (128, 18, 6),
        "source_downs.2.weight": (64, 18, 1),
        "source_resblocks.2.convs1.0.parametrizations.weight.original1": (64, 64, 11),
        "resblocks.8.activations2.2.alpha": (64,),
        "conv_post.parametrizations.weight.original1": (18, 64, 7),
        "f0_predictor.condnet.8.parametrizations.weight.original1": (512, 512, 3),
        "f0_predictor.classifier.weight": (1, 512),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("stft_window" in k for k in sd)


def test_tiny_write_load_round_trip(tiny_dir):
    raw = torch.load(tiny_dir / "hift.pt", weights_only=True)
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert cfg["base_channels"] == 64 and cfg["upsample_rates"] == [8, 5, 3]
    gen = H.load_hift_generator(tiny_dir / "hift.pt")
    assert set(raw) == set(gen.state_dict())
    for k, v in gen.state_dict().items():
        assert torch.equal(v, raw[k]), k
    gen.load_state_dict(raw, strict=True)


def test_legacy_weight_norm_keys_load(tmp_path, tiny_dir):
    d = tmp_path / "hift"
    H.write_tiny_hift(d, base_channels=64, seed=0, legacy_weight_norm=True)
    raw = torch.load(d / "hift.pt", weights_only=True)
    assert "conv_pre.weight_g" in raw and not any("parametrizations" in k for k in raw)
    a = H.load_hift_generator(d).state_dict()
    b = H.load_hift_generator(tiny_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_output_length_and_range(vocoder):
    for frames in (1, 5):
        wav = vocoder(_mel(frames, batch=2))
        assert wav.shape == (2, frames * 480) and wav.dtype == torch.float32
        assert torch.isfinite(wav).all() and wav.abs().max() <= 0.99


def test_deterministic_with_seed(vocoder):
    mel = _mel(3)
    a = vocoder(mel)
    assert torch.equal(a, vocoder(mel))                                   # default seed 0
    assert torch.equal(a, vocoder(mel, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(a, vocoder(mel, seed=4))


def test_cache_source_replaces_start(vocoder):
    mel = _mel(3)
    wav, src = vocoder.vocode(mel, seed=1)
    assert src.shape == (1, 1, 3 * 480)
    wav2, src2 = vocoder.vocode(mel, seed=2, cache_source=src)
    assert torch.equal(src2, src) and torch.allclose(wav2, wav, atol=1e-6)


def test_bad_mel_shape(vocoder):
    with pytest.raises(ValueError, match=r"\[B, 80, T>=1\]"):
        vocoder(torch.zeros(80, 5))


def test_missing_checkpoint_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        H.load_hift(tmp_path / "nowhere" / "hift.pt")


def test_mismatched_checkpoint_names_file(tmp_path, tiny_dir):
    d = tmp_path / "hift"
    d.mkdir()
    (d / "hift.pt").write_bytes((tiny_dir / "hift.pt").read_bytes())
    # no config.json → published sizes expected → shape mismatch
    with pytest.raises(H.HiFTCheckpointError, match=r"hift\.pt.*published sizes assumed.*shape mismatch"):
        H.load_hift(d)
    # a key removed → missing
    raw = torch.load(d / "hift.pt", weights_only=True)
    raw.pop("conv_post.bias")
    torch.save(raw, d / "hift.pt")
    (d / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(H.HiFTCheckpointError, match=r"hift\.pt.*1 missing: conv_post\.bias"):
        H.load_hift(d)
    # garbage file, bad config
    (d / "hift.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(H.HiFTCheckpointError, match=r"hift\.pt: not a readable"):
        H.load_hift(d)
    (d / "config.json").write_text('{"base_channels": 64, "bogus": 1}')
    with pytest.raises(H.HiFTCheckpointError, match=r"config\.json.*bogus"):
        H.load_hift(d)

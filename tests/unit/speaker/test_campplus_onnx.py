"""A GLM-TTS checkpoint's CAM++ ONNX as a speaker encoder: the official front end (80-bin kaldi fbank at 16 kHz,
dither 0, mean over the whole prompt), the id from the file's hash, and chosen per request next to the default."""
import asyncio

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from services.speaker.engine import SpeakerEngine
from services.speaker.engine.cache import EmbeddingCache
from services.speaker.engine.campplus_onnx import CamppOnnxEncoder, write_tiny_campplus_onnx
from shared.errors import InvalidArgument
from shared.speaker_encoders import campplus_onnx_id, file_version


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("campplus")
    return write_tiny_campplus_onnx(d / "a" / "campplus.onnx", seed=0), write_tiny_campplus_onnx(d / "b.onnx", seed=1)


def _speech(seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 170 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_onnx_encoder_follows_the_official_front_end(onnx_files):
    import onnxruntime as ort

    enc = CamppOnnxEncoder(str(onnx_files[0]))
    enc.load()
    assert enc.dim == 192 and enc.name == "campplus-onnx"
    assert f"{enc.name}@{enc.version}" == campplus_onnx_id(onnx_files[0])
    speech = _speech()
    # the official recipe, written out: fbank of the whole prompt, minus its mean, [1, T, 80] in, flattened out
    feat = kaldi.fbank(torch.from_numpy(speech)[None], num_mel_bins=80, dither=0, sample_frequency=16000)
    feat = feat - feat.mean(dim=0, keepdim=True)
    sess = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    assert [i.shape for i in sess.get_inputs()] == [[1, "frames", 80]]
    expected = sess.run(None, {sess.get_inputs()[0].name: feat[None].numpy()})[0].flatten()
    assert np.allclose(enc.embed(speech).numpy(), expected, rtol=1e-5, atol=1e-5)   # graph optimizations differ
    # without the mean normalization the model gives another vector: the front end is what the test checks
    raw = sess.run(None, {sess.get_inputs()[0].name: (feat + 3.0)[None].numpy()})[0].flatten()
    assert not np.allclose(raw, expected, atol=1e-3)


def test_engine_serves_the_onnx_encoder_next_to_the_default(onnx_files):
    a, b = CamppOnnxEncoder(str(onnx_files[0])), CamppOnnxEncoder(str(onnx_files[1]))
    assert a.version == file_version(onnx_files[0]) != b.version
    engine = SpeakerEngine(a, EmbeddingCache(None), extra_encoders=[b])
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, _speech(3.0), 16000, format="WAV", subtype="FLOAT")

    async def go():
        await engine.warmup()
        ra = await engine.embed(buf.getvalue())                            # default
        rb = await engine.embed(buf.getvalue(), f"campplus-onnx@{b.version}")
        assert (ra.encoder, ra.version) == ("campplus-onnx", a.version) and rb.version == b.version
        assert ra.reference_id == rb.reference_id                      # same content
        assert not np.allclose(ra.embedding, rb.embedding)
        # the cache key carries the encoder id: each encoder's result is cached apart
        assert engine.key(ra.reference_id, a) != engine.key(ra.reference_id, b)
        assert b.version in engine.key(ra.reference_id, b)
        got = await engine.get(ra.reference_id, f"campplus-onnx@{b.version}")
        assert np.array_equal(got.embedding, rb.embedding)
        with pytest.raises(InvalidArgument, match="campplus-onnx@"):
            await engine.embed(buf.getvalue(), "campplus-onnx@0000000000000000")
    asyncio.run(go())

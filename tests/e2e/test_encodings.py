"""OGG_OPUS and MP3 through the real gateway, streaming and unary: the chunks are whole Ogg pages / MPEG frames, and
what a client saves decodes (libsndfile: libogg+libopus, mpg123 — not the FFmpeg that encoded it) to the same speech
as the LINEAR16 answer to the same request."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from tests.unit.shared.test_encodings import _mp3_frames, _ogg_pages
from tts.v1 import tts_pb2
from tts_client.client import make_config

TEXT = "您好，请问有什么可以帮您？"


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768


def best_correlation(ref: np.ndarray, y: np.ndarray, max_lag: int = 3000) -> float:
    n = len(ref) - max_lag
    core = ref[:n]
    return max(float(np.dot(core, y[lag:lag + n]) / (np.linalg.norm(core) * np.linalg.norm(y[lag:lag + n]) + 1e-9))
               for lag in range(0, max_lag, 2) if len(y) >= lag + n)


@pytest.fixture(scope="module")
def reference(stack):
    with stack.client() as client:
        return pcm(client.stream([TEXT], make_config(seed=7, sample_rate=16000)).audio)


@pytest.mark.parametrize("encoding, proto", [("ogg_opus", tts_pb2.OGG_OPUS), ("mp3", tts_pb2.MP3)])
def test_streamed_compressed_audio_is_whole_pages_or_frames_and_the_same_speech(client, reference, encoding, proto):
    res = client.stream([TEXT], make_config(seed=7, sample_rate=16000, encoding=encoding))
    assert len(res.chunks) >= 2 and all(c.encoding == proto and c.sample_rate == 16000 for c in res.chunks)
    for k, c in enumerate(res.chunks):          # every chunk on its own is whole pages / frames
        if encoding == "ogg_opus":
            assert _ogg_pages(c.audio)
        else:
            assert _mp3_frames(c.audio, skip_id3=k == 0) >= 0
    offset = 0.0
    for c in res.chunks:                        # offsets/durations count audio samples, as for PCM
        assert c.offset_ms == pytest.approx(offset, abs=1e-6)
        offset += c.duration_ms
    assert res.summary.audio_ms == pytest.approx(offset, abs=1e-3)
    y, rate = sf.read(io.BytesIO(res.audio), dtype="float32")
    assert rate == 16000
    assert abs(len(y) - len(reference)) <= 2 * 1152 + 1024
    assert best_correlation(reference, y) > 0.9


@pytest.mark.parametrize("encoding", ["ogg_opus", "mp3"])
def test_unary_compressed_audio_is_a_complete_file(client, reference, encoding):
    resp = client.synthesize(TEXT, make_config(seed=7, sample_rate=16000, encoding=encoding))
    assert resp.encoding == tts_pb2.AudioEncoding.Value(encoding.upper())
    y, rate = sf.read(io.BytesIO(resp.audio), dtype="float32")
    assert rate == 16000 and best_correlation(reference, y) > 0.9


def test_opus_refuses_a_rate_opus_does_not_have(client):
    import grpc

    with pytest.raises(grpc.RpcError) as err:
        client.synthesize(TEXT, make_config(sample_rate=22050, encoding="ogg_opus"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("config.sample_rate")

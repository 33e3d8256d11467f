"""The glmtts engine through the public API: routing by model name and for cloned voices, token-level streaming."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from tts_client.client import make_config

DATA = Path(__file__).resolve().parents[1] / "data"


def test_model_glmtts_streams_audio_while_text_still_arrives(client):
    first_audio = threading.Event()
    waited = []

    def pieces():
        yield "你好，"
        yield "欢迎。"
        waited.append(first_audio.wait(timeout=60))    # the "LLM" holds its last piece until audio came back
        yield "再见。"

    res = client.stream(pieces(), make_config(model="glmtts", seed=3, chunk_size=10),
                        on_chunk=lambda c: first_audio.set())
    assert waited == [True]
    assert res.summary.tokens > 0 and res.summary.segments == 3
    offset = 0
    for c in res.chunks:
        assert c.sample_rate == 24000 and abs(c.offset_ms - offset) < 1e-6
        offset += c.duration_ms
    # 25 speech tokens per second of audio
    assert abs(res.summary.audio_ms - res.summary.tokens * 40) < 1


def test_glmtts_same_seed_same_audio_at_16k(client):
    cfg = make_config(model="glmtts", seed=9, sample_rate=16000)
    a, b = client.stream(["一二三。"], cfg), client.stream(["一二三。"], cfg)
    assert a.audio == b.audio and len(a.audio) > 0
    assert all(c.sample_rate == 16000 for c in a.chunks)


def test_reference_audio_clones_through_speaker_and_glmtts(client):
    audio = (DATA / "BAC009S0764W0122.wav").read_bytes()
    res = client.stream(["你好。"], make_config(reference_audio=audio, prompt_text="参考", seed=1))
    assert res.summary.audio_ms > 0
    pcm = np.frombuffer(res.audio, dtype="<i2")
    assert np.isfinite(pcm.astype(np.float32)).all() and len(pcm) > 0

"""The prompt audio for the glmtts prompt mel: the canonical stretch resampled ONCE from the source to 24 kHz (not
16 kHz → 24 kHz, which loses the mel's 7-8 kHz bands), carried through the cache."""
import io

import numpy as np
import soundfile as sf
import torch

from services.decoder.engine.glmtts.mel import mel_spectrogram
from services.speaker.engine.audio import canonical
from services.speaker.engine.cache import MAGIC, Entry, decode_entry, encode_entry
from shared.audio import resample

LIMIT = 10 * 1024 * 1024


def _source(rate=48000, seconds=4.0):
    """Speech-like: a syllabic voiced tone with harmonics up to 7.6 kHz, 0.5 s of silence at both ends."""
    t = np.arange(int(seconds * rate)) / rate
    env = (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) * ((t > 0.5) & (t < seconds - 0.5))
    x = sum(0.02 * np.sin(2 * np.pi * 190 * k * t) for k in range(1, 42))
    buf = io.BytesIO()
    sf.write(buf, (0.8 * env * x).astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buf.getvalue(), (0.8 * env * x).astype(np.float32)


def test_24k_prompt_keeps_the_top_mel_bands():
    data, src = _source()
    pcm16, pcm24, _ = canonical(data, LIMIT)
    assert abs(len(pcm24) - 1.5 * len(pcm16)) <= 1
    a24 = pcm24.astype(np.float32) / 32768
    via16 = resample(pcm16.astype(np.float32) / 32768, 16000, 24000)
    direct = resample(src, 48000, 24000)
    # the same stretch as the 16 kHz canonical audio: aligned with the source resampled straight to 24 kHz
    lag = [float(np.abs(a24 - direct[s: s + len(a24)]).max()) for s in range(0, len(direct) - len(a24) + 1, 1)]
    assert min(lag) < 1e-3
    m24 = mel_spectrogram(torch.from_numpy(a24))
    m16 = mel_spectrogram(torch.from_numpy(via16[: len(a24)]))
    top = slice(70, 80)                                              # 7-8 kHz
    loud = m24[0, :40].mean(dim=0) > m24[0, :40].mean(dim=0).max() - 3          # voiced frames
    diff = (m24[0][:, loud] - m16[0][:, loud]).mean(dim=1)                     # per band, nats
    # energy there survives only in the 24 kHz path (16 kHz cuts below 8 kHz: the top bands lose it)
    assert float(diff[top].max()) > 1.0, diff[top]
    assert float(diff[:60].abs().max()) < 0.05, diff[:60]                    # below 6 kHz both agree


def test_cache_value_carries_the_24k_audio_and_reads_schema_1():
    e = Entry(np.arange(192, dtype=np.float32), 4.5, np.arange(100, dtype=np.int16), np.arange(150, dtype=np.int16))
    back = decode_entry(encode_entry(e))
    assert np.array_equal(back.pcm16, e.pcm16) and np.array_equal(back.pcm24k, e.pcm24k)
    old = MAGIC + bytes([1]) + (192).to_bytes(2, "little") + e.embedding.astype("<f4").tobytes() + \
        np.float32(4.5).tobytes() + e.pcm16.astype("<i2").tobytes()
    back = decode_entry(old)
    assert np.array_equal(back.pcm16, e.pcm16) and len(back.pcm24k) == 0

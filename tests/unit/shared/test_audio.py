import audioop  # deprecated but present in 3.11: a reference implementation of G.711 to compare against
import io
import wave

import numpy as np
import pytest

from shared.audio import (AudioEncoder, StreamResampler, decode_audio, float_to_pcm16, mulaw_decode, mulaw_encode,
                          resample, wav_bytes, wav_header)


def tone(seconds=0.5, rate=24000, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mulaw_matches_g711_reference():
    x = np.linspace(-1, 1, 20001).astype(np.float32)
    assert mulaw_encode(x) == audioop.lin2ulaw(float_to_pcm16(x), 2)


def test_mulaw_roundtrip_error_is_small():
    x = tone()
    assert np.abs(mulaw_decode(mulaw_encode(x)) - x).max() < 0.02


def test_wav_bytes_is_a_valid_file():
    data = wav_bytes(tone(0.25, rate=16000), 16000)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 4000)


def test_streaming_wav_header_marks_unknown_length():
    assert wav_header(24000)[4:8] == b"\xff\xff\xff\xff"


@pytest.mark.parametrize("dst", [8000, 16000, 32000, 48000])
def test_stream_resampler_matches_one_shot(dst):
    x = tone(1.0)
    rs = StreamResampler(24000, dst)
    pieces = [rs(x[i:i + 2400]) for i in range(0, len(x), 2400)] + [rs(np.zeros(0, np.float32), last=True)]
    streamed = np.concatenate(pieces)
    whole = resample(x, 24000, dst)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    assert np.abs(streamed[:n] - whole[:n]).max() < 1e-3


def test_encoder_writes_wav_header_once_then_pcm():
    enc = AudioEncoder(24000, 24000, "WAV")
    first, n1 = enc.encode(tone(0.1))
    second, n2 = enc.encode(tone(0.1))
    assert first.startswith(b"RIFF") and len(first) == 44 + 2 * n1
    assert not second.startswith(b"RIFF") and len(second) == 2 * n2


def test_encoder_mulaw_is_one_byte_per_sample_at_8k():
    enc = AudioEncoder(24000, 8000, "MULAW")
    data, n = enc.encode(tone(0.3))
    tail, m = enc.encode(np.zeros(0, np.float32), last=True)
    assert len(data) == n and len(tail) == m and abs((n + m) - 2400) <= 2


def test_decode_audio_rejects_garbage_with_reason():
    with pytest.raises(ValueError, match="cannot decode"):
        decode_audio(b"this is a text file, not audio")
    with pytest.raises(ValueError, match="empty"):
        decode_audio(b"")

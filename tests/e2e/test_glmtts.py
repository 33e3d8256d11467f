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
    # "你好，" goes out early (first audio); "欢迎。" waits to be merged (glmtts: 30-60 units) and goes with "再见。"
    assert res.summary.tokens > 0 and res.summary.segments == 2
    offset = 0
    for c in res.chunks:
        assert c.sample_rate == 24000 and abs(c.offset_ms - offset) < 1e-6
        offset += c.duration_ms
    # 25 speech tokens per second of audio
    assert abs(res.summary.audio_ms - res.summary.tokens * 40) < 1


def test_glmtts_gets_merged_segments_and_the_kokoro_engine_clauses(client):
    text = "你好！他说：今天天气不错，我们去公园散步吧。"
    glm = client.stream([text], make_config(model="glmtts", seed=2))
    emb = client.stream([text], make_config(seed=2))
    assert glm.summary.segments == 1 and emb.summary.segments >= 3


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


def _speaker_reference_id(stack, audio: bytes) -> str:
    import grpc

    from tts.speaker.v1 import speaker_pb2, speaker_pb2_grpc

    with grpc.insecure_channel(stack.speaker.addr) as ch:
        return speaker_pb2_grpc.SpeakerStub(ch).Embed(speaker_pb2.EmbedRequest(audio=audio), timeout=60).reference_id


def _wav_bytes(name: str, gain: float = 1.0) -> bytes:
    import io

    import soundfile as sf

    audio, sr = sf.read(DATA / name, dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, audio * gain, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_cloning_speaks_the_reference_given_and_says_which(stack, client):
    """Same text and seed: reference A, reference B and the default voice give three different audios, conditioned
    by three different (embedding, prompt) digests where they enter the flow; the summary names the voice used."""
    ref_a, ref_b = _wav_bytes("BAC009S0764W0122.wav"), _wav_bytes("BAC009S0764W0121.wav")
    text = ["你好。"]
    a = client.stream(text, make_config(reference_audio=ref_a, prompt_text="参考", seed=1))
    a2 = client.stream(text, make_config(reference_audio=ref_a, prompt_text="参考", seed=1))
    b = client.stream(text, make_config(reference_audio=ref_b, prompt_text="参考", seed=1))
    d = client.stream(text, make_config(model="glmtts", seed=1))
    assert a.audio == a2.audio and a.summary.conditioning == a2.summary.conditioning
    assert len({a.audio, b.audio, d.audio}) == 3
    digests = {a.summary.conditioning, b.summary.conditioning, d.summary.conditioning}
    assert len(digests) == 3 and "" not in digests
    assert a.summary.voice == "ref:" + _speaker_reference_id(stack, ref_a)
    assert b.summary.voice == "ref:" + _speaker_reference_id(stack, ref_b)
    assert d.summary.voice == "default"


def test_a_registered_voice_goes_by_id_and_its_audio_travels_once(stack, client):
    """The gateway sends only the reference id; the decoder, not holding the prompt yet, answers NOT_FOUND and the
    gateway resends with the audio once; afterwards the id alone is enough. Same audio as the direct clone."""
    audio = _wav_bytes("BAC009S0764W0121.wav", gain=0.77)     # content no other test uses: a new reference id
    ref = _speaker_reference_id(stack, audio)
    vid = client.register_voice("注册音色", audio, prompt_text="参考").voice.id
    log = stack.gateway.log_path

    def resends():
        return sum(ref[:16] in line and "resending" in line for line in log.read_text().splitlines())

    try:
        first = client.stream(["你好。"], make_config(voice=vid, seed=2))
        assert resends() == 1 and first.summary.voice == "ref:" + ref
        second = client.stream(["你好。"], make_config(voice=vid, seed=2))
        assert resends() == 1                                   # the decoder had it: no audio sent this time
        assert second.audio == first.audio and second.summary.conditioning == first.summary.conditioning
        direct = client.stream(["你好。"], make_config(reference_audio=audio, prompt_text="参考", seed=2))
        assert direct.audio == first.audio and direct.summary.voice == first.summary.voice
    finally:
        client.delete_voice(vid)


def test_glmtts_alignment_is_estimated_and_covers_every_character(client):
    """glmtts cannot know which text token a speech token voices: its character times are an estimate, flagged."""
    text = "您好，我是客服小安。"
    res = client.stream([text], make_config(model="glmtts", seed=4, alignment=True))
    entries = [e for c in res.chunks for e in c.alignment]
    assert [(e.span.start, e.span.end) for e in entries] == [(i, i + 1) for i in range(len(text))]
    assert all(c.alignment_estimated for c in res.chunks if c.alignment)
    starts = [e.start_ms for e in entries]
    assert starts == sorted(starts) and entries[-1].end_ms <= res.summary.audio_ms + 1e-6

"""End to end through the gateway: streaming text in, audio out, bad input, voices, the frontend's view."""
from __future__ import annotations

import io
import threading
import wave

import grpc
import numpy as np
import pytest

from shared.audio import mulaw_decode
from tts.v1 import tts_pb2
from tts_client.client import make_config

SENTENCE = "今天是2026年1月13日，气温-3℃。"


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768


def test_first_audio_arrives_before_the_last_text_piece_is_sent(client):
    first_audio = threading.Event()
    sent_last_after_audio = []

    def pieces():
        yield "你好，"
        yield "欢迎使用"
        yield "语音合成服务。"
        # an LLM is still "thinking": do not send the rest until audio has come back (bounded wait)
        sent_last_after_audio.append(first_audio.wait(timeout=60))
        yield "这是最后一句话。"

    res = client.stream(pieces(), make_config(), on_chunk=lambda c: first_audio.set())
    assert sent_last_after_audio == [True], "no audio arrived while the client was still sending text"
    assert res.summary.segments >= 2
    assert res.summary.audio_ms > 2000
    assert res.chunks[-1].segment_text.startswith("这是最后一句话")


def test_chunks_carry_rate_offsets_and_spans(client):
    text = "第一句话。第二句话，很短。"
    res = client.stream([text], make_config(sample_rate=16000))
    assert res.chunks and all(c.sample_rate == 16000 and c.encoding == tts_pb2.LINEAR16 for c in res.chunks)
    offset = 0.0
    for c in res.chunks:
        assert c.offset_ms == pytest.approx(offset, abs=1e-6)
        assert c.duration_ms == pytest.approx(len(c.audio) / 2 / 16000 * 1000, abs=1e-6)
        offset += c.duration_ms
        assert text[c.span.start:c.span.end] == c.segment_text
    assert res.summary.audio_ms == pytest.approx(offset, abs=1e-3)
    assert res.summary.first_chunk_latency_ms > 0 and res.summary.real_time_factor > 0
    assert res.summary.engine == "fastspeech2" and res.summary.voice == "baker"      # the default for Mandarin


def test_unary_synthesize_returns_a_complete_wav(client):
    resp = client.synthesize(SENTENCE, make_config(encoding="wav"))
    with wave.open(io.BytesIO(resp.audio)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        audio = pcm(w.readframes(w.getnframes()))
    assert len(audio) / 24000 > 2.0
    assert np.sqrt(np.mean(audio ** 2)) > 0.02          # speech, not silence


def test_mulaw_8k_for_telephony(client):
    res = client.stream(["请稍等，正在为您转接。"], make_config(sample_rate=8000, encoding="mulaw"))
    audio = mulaw_decode(res.audio)
    assert all(c.encoding == tts_pb2.MULAW and c.sample_rate == 8000 for c in res.chunks)
    assert len(res.audio) == pytest.approx(res.summary.audio_ms * 8, abs=2)
    assert np.abs(audio).max() > 0.05


def test_same_request_gives_identical_audio(client):
    cfg = make_config(seed=42)
    assert client.synthesize("重复一遍。", cfg).audio == client.synthesize("重复一遍。", cfg).audio


@pytest.mark.parametrize("kwargs, field", [
    ({"sample_rate": 12345}, "config.sample_rate"),
    ({"voice": "no-such-voice"}, "config.voice"),
    ({"chunk_size": 10**6}, "config.chunk_size"),
    ({"speed": 9.0}, "config.speed"),
    ({"model": "nope"}, "config.model"),
    ({"encoding": "mulaw", "sample_rate": 16000}, "config.sample_rate"),
])
def test_bad_config_is_invalid_argument_naming_the_field(client, kwargs, field):
    with pytest.raises(grpc.RpcError) as err:
        client.stream(["你好。"], make_config(**kwargs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field), err.value.details()


@pytest.mark.parametrize("text, needle", [
    ("", "text: is empty"),
    ("   \n ", "text: is empty"),
    ("。，！？", "nothing to speak"),
    ("x" * 1_000_001, "limit"),
    ("你好\x07世界", "control character U+0007"),
])
def test_bad_text_is_invalid_argument(client, text, needle):
    with pytest.raises(grpc.RpcError) as err:
        client.synthesize(text, make_config())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()


def test_invalid_utf8_is_invalid_argument_naming_the_field(stack):
    # A hand-made StreamingSynthesizeRequest{text: b"\xff\xfe"}: field 2, wire type 2, length 2.
    channel = grpc.insecure_channel(stack.gateway.addr)
    call = channel.stream_stream("/tts.v1.TextToSpeech/StreamingSynthesize",
                                 request_serializer=lambda b: b, response_deserializer=lambda b: b)
    config = tts_pb2.StreamingSynthesizeRequest(config=make_config()).SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        list(call(iter([config, b"\x12\x02\xff\xfe"]), timeout=30))
    channel.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("text")


def test_protocol_errors(client):
    stub = client.stub
    text_first = [tts_pb2.StreamingSynthesizeRequest(text="你好")]
    config = tts_pb2.StreamingSynthesizeRequest(config=make_config())
    for requests, field in ((text_first, "config"), ([config, config], "config"), ([], "config")):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamingSynthesize(iter(requests), timeout=30))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field)


def test_a_stream_that_never_half_closes_is_ended(client):
    stop = threading.Event()

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=make_config())
        yield tts_pb2.StreamingSynthesizeRequest(text="你好。")
        stop.wait(60)            # never half-close (until the test ends)

    try:
        with pytest.raises(grpc.RpcError) as err:
            list(client.stub.StreamingSynthesize(requests(), timeout=60))
    finally:
        stop.set()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "half-close" in err.value.details()


def test_service_keeps_serving_after_bad_input(client):
    res = client.stream(["还在正常工作。"], make_config())
    assert res.summary.audio_ms > 500


def test_models_are_the_engines_the_decoders_serve(client, stack, capsys):
    """The gateway, the CLI and the page learn the model names from the decoders' Info (the stack enables both)."""
    assert client.models() == (["fastspeech2", "kokoro", "glmtts"], "fastspeech2")
    with pytest.raises(grpc.RpcError) as err:
        client.stream(["你好。"], make_config(model="nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "config.model: unknown model 'nope'; use one of: fastspeech2, kokoro, glmtts"
    from tts_client.cli import main

    assert main(["--target", stack.gateway.addr, "models"]) == 0
    assert capsys.readouterr().out.splitlines() == ["fastspeech2\tdefault", "kokoro", "glmtts"]


def test_list_voices_has_builtin_voices_with_their_language_and_licence(client, stack, capsys):
    voices = {v.id: v for v in client.voices()}
    baker, kumo = voices["baker"], voices["jm_kumo"]
    assert (baker.engine, baker.language, kumo.engine, kumo.license) == ("fastspeech2", "zh", "kokoro", "Apache-2.0")
    assert "non-commercial" in baker.license and "CC BY-NC-SA 4.0" in baker.license
    from tts_client.cli import main

    assert main(["--target", stack.gateway.addr, "voices"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("baker\t"))
    assert line.split("\t")[2] == "fastspeech2" and "non-commercial" in line


def test_a_request_that_names_no_engine_goes_where_its_voice_or_language_is_spoken(client):
    assert client.stream(["您好，请问有什么可以帮您？"], make_config()).summary.engine == "fastspeech2"
    # English to the engine that speaks it (kokoro's Info lists "en", fastspeech2's only "zh")
    res = client.stream(["Hello, how can I help you today?"], make_config(language="en"))
    assert res.summary.engine == "kokoro" and res.summary.audio_ms > 1000
    # a built-in voice of another engine takes its engine
    assert client.stream(["你好。"], make_config(voice="jm_kumo")).summary.engine == "kokoro"


def test_analyze_text_shows_normalization_and_pinyin(client):
    segs = client.analyze("我在银行工作，气温-3℃。")
    words = [w for s in segs for w in s.words]
    assert any("hang2" in w.pinyin for w in words if "行" in w.text)
    assert "三" in "".join(s.normalized for s in segs)
    assert all(s.phonemes for s in segs)
    # the engine-neutral reading: pinyin with tone digits for Chinese words, ARPAbet pieces for English ones
    bank = next(w for w in words if w.text == "银行")
    assert bank.phonemes == " ".join(bank.pinyin) == "yin2 hang2"
    (wifi,) = [w for s in client.analyze("连上Wi-Fi了") for w in s.words if w.lang == "en"]
    assert (wifi.text, wifi.phonemes) == ("Wi-Fi", "W AY1 | F AY2")


def test_the_earlier_model_name_still_works_for_one_release(client):
    res = client.stream(["你好。"], make_config(model="embedded"))
    assert res.summary.engine == "kokoro" and res.audio


@pytest.mark.parametrize("pieces", [[], [""], ["。，", None]])
def test_a_stream_without_speakable_text_is_invalid_argument(client, pieces):
    with pytest.raises(grpc.RpcError) as err:
        client.stream(pieces, make_config())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "text: the stream ended without any text to speak"


def test_register_list_and_delete_a_voice(client):
    from pathlib import Path

    audio = (Path(__file__).resolve().parents[1] / "data" / "BAC009S0764W0121.wav").read_bytes()
    resp = client.register_voice("客服小王", audio, prompt_text="参考文本")
    vid = resp.voice.id
    assert vid.startswith("v_") and len(vid) == 34 and resp.voice.reference_seconds > 3
    listed = {v.id: v for v in client.voices()}
    assert listed[vid].name == "客服小王" and not listed[vid].builtin
    # a cloned voice goes to the cloning engine (glmtts); the kokoro one says so instead of speaking another voice
    result = client.stream(["你好。"], make_config(voice=vid, seed=1))
    assert result.summary.audio_ms > 0 and len(result.audio) > 0
    with pytest.raises(grpc.RpcError) as err:
        client.stream(["你好。"], make_config(voice=vid, model="kokoro"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "clon" in err.value.details()
    client.delete_voice(vid)
    assert vid not in {v.id for v in client.voices()}
    with pytest.raises(grpc.RpcError) as err:
        client.delete_voice(vid)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_register_bad_audio_is_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as err:
        client.register_voice("x", b"not audio" * 100)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("audio")

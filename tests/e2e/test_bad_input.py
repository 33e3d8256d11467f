"""Bad input through the real gateway (and the speaker / frontend behind it), one named test per case.

Each case asserts the exact status code, that the message names the field or the reason, and that the service then
still serves a good request. Cases that already live in test_gateway.py (sample_rate 12345, unknown voice name,
chunk_size 10^6, speed 9, unknown model, MULAW at 16 kHz; Synthesize with "", whitespace, only punctuation, 1M chars,
U+0007; invalid UTF-8 in a streamed text piece; text before config, config twice, no messages; a stream that never
half-closes after text; streams of "", [] or punctuation only; RegisterVoice with "not audio") are not repeated.

Decided behaviour for input that is odd but not wrong (README "Reliability"):
- emoji, other scripts (Arabic, Hebrew, ...) and symbols are skipped; the rest is spoken. A request with nothing
  left to speak is INVALID_ARGUMENT ("text: nothing in it can be spoken ..." or "... without any text to speak").
- SSML tags (<speak>, <break/>, <prosody>, ...) are INVALID_ARGUMENT naming the tag and position, also when a tag is
  split across streamed pieces; "3<5" and other angle brackets are ordinary text.
- a run of 10,000 digits is cut into segments of at most 120 characters, so audio starts after the first one.
- reference audio: any rate (8-96 kHz) and channel count is resampled/downmixed; a WAV whose header declares a
  wrong length is read as far as the header and the data agree; noise, steady tones and sub-audio rumble are refused.
"""
from __future__ import annotations

import io
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.procs import make_stack
from tts.v1 import tts_pb2
from tts_client.client import make_config
from tts_client.errors import from_rpc_error

DATA = Path(__file__).resolve().parents[1] / "data"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
REF, REF_RATE = sf.read(DATA / "BAC009S0764W0121.wav", dtype="float32")      # 4.2 s of Mandarin speech, 16 kHz


def wav(samples, rate=REF_RATE, subtype="PCM_16", fmt="WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


GOOD_WAV = wav(REF)


def with_data_length(data: bytes, length: int) -> bytes:
    out = bytearray(data)
    i = out.find(b"data")
    out[i + 4:i + 8] = struct.pack("<I", length)
    return bytes(out)


def data_length(data: bytes) -> int:
    i = data.find(b"data")
    return struct.unpack("<I", data[i + 4:i + 8])[0]


def with_sample(value: float) -> bytes:
    x = REF.copy()
    x[1000] = value
    return wav(x, subtype="FLOAT")


def mp3(damage: Callable[[bytearray], None] | None = None) -> bytes:
    data = bytearray(wav(REF, subtype="MPEG_LAYER_III", fmt="MP3"))
    if damage:
        damage(data)
    return bytes(data)


def garbage_at(start_fraction: float, n: int):
    def damage(data: bytearray):
        start = int(len(data) * start_fraction)
        data[start:start + n] = (b"garbage!" * n)[:n]
    return damage


HAVE_MP3 = "MP3" in sf.available_formats()


# ---- how a case is sent --------------------------------------------------------------------------------------------
def stream(pieces, **cfg):
    """Streamed text (None = flush) with a config built by make_config(**cfg)."""
    return lambda c, s: c.stream(pieces, make_config(**cfg))


def synth(text, **cfg):
    return lambda c, s: c.synthesize(text, make_config(**cfg))


def analyze(text, **kw):
    return lambda c, s: c.analyze(text, **kw)


def register(audio, name="probe", prompt_text=""):
    def call(c, s):
        resp = c.register_voice(name, audio, prompt_text=prompt_text)
        c.delete_voice(resp.voice.id)
        return resp
    return call


def with_config(mutate, pieces=("你好。",)):
    def call(c, s):
        cfg = make_config()
        mutate(cfg)
        return c.stream(list(pieces), cfg)
    return call


def raw(method: str, *messages: bytes, unary: bool = False, timeout: float = 30):
    """Hand-made wire bytes to the gateway (what a buggy or hostile client could send)."""
    def call(c, s):
        with grpc.insecure_channel(s.gateway.addr, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            if unary:
                return ch.unary_unary(f"/tts.v1.TextToSpeech/{method}", request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)(messages[0], timeout=timeout)
            return list(ch.stream_stream(f"/tts.v1.TextToSpeech/{method}", request_serializer=lambda b: b,
                                         response_deserializer=lambda b: b)(iter(messages), timeout=timeout))
    return call


def ser(**kw) -> bytes:
    return tts_pb2.StreamingSynthesizeRequest(**kw).SerializeToString()


CONFIG = ser(config=make_config())


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    """One protobuf field (payload: the varint bytes, or the raw bytes of a length-delimited field)."""
    return varint(number << 3 | wire_type) + (varint(len(payload)) + payload if wire_type == 2 else payload)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


@dataclass
class Case:
    id: str
    call: Callable
    code: grpc.StatusCode | None          # None: accepted
    needle: str = ""                      # in the message (errors); for accepted cases see ``check``
    kind: str = "synth"                   # which good request proves the service still serves: synth | voice
    check: Callable | None = None         # extra assertion on an accepted result


def audio_ms(res) -> float:
    return res.summary.audio_ms


CASES = [
    # ---- text ------------------------------------------------------------------------------------------------------
    Case("text_emoji_only", stream(["😀🎉👍"]), INVALID, "text: the stream ended without any text to speak"),
    Case("text_emoji_inside_chinese_is_skipped", stream(["好😀"]), None,
         check=lambda r: audio_ms(r) > 300 and r.chunks[0].segment_text == "好😀"),
    Case("text_rtl_arabic_only", stream(["مرحبا بالعالم"]), INVALID, "text: nothing in it can be spoken"),
    Case("text_rtl_hebrew_only_unary", synth("שלום עולם"), INVALID, "text: nothing in it can be spoken"),
    Case("text_rtl_mixed_with_chinese_speaks_the_chinese", stream(["مرحبا 好"]), None,
         check=lambda r: audio_ms(r) > 300),
    Case("text_bidi_override_marks_are_ignored", stream(["\u202e好\u202c"]), None, check=lambda r: audio_ms(r) > 300),
    Case("text_zero_width_and_bom_only", stream(["\ufeff\u200b\u200d"]), INVALID, "without any text to speak"),
    Case("text_combining_marks_only", stream(["\u0301\u0302"]), INVALID, "without any text to speak"),
    Case("text_whitespace_pieces_only", stream([" ", "\n", "\t"]), INVALID, "without any text to speak"),
    Case("text_flushes_only", stream([None, None]), INVALID, "without any text to speak"),
    Case("text_ssml_tags_unary", synth("<speak>你好<break time='1s'/>世界</speak>"), INVALID,
         "text: SSML is not supported: tag '<speak>' at position 0"),
    Case("text_ssml_tag_split_across_pieces", stream(["你好<bre", "ak time='1s'/>世界。"]), INVALID,
         "text: SSML is not supported: tag \"<break time='1s'/>\" at position 2"),
    Case("text_ssml_in_analyze", analyze("<prosody rate='slow'>慢</prosody>"), INVALID, "text: SSML is not supported",
         kind="analyze"),
    Case("text_angle_brackets_are_plain_text", analyze("3<5，a<b and c>d"), None,
         kind="analyze", check=lambda segs: "小于" in "".join(s.normalized for s in segs)),
    Case("text_nul_in_a_streamed_piece", stream(["你好", "\x00世界"]), INVALID, "text: control character U+0000 at position 0"),
    Case("text_del_character", synth("你好\x7f"), INVALID, "text: control character U+007F"),
    Case("text_c1_next_line_control", stream(["你好\u0085世界"]), INVALID, "text: control character U+0085 at position 2"),
    Case("text_over_limit_across_pieces", stream(["好。", " " * 10000, " " * 10000]), INVALID,
         "text: the request's text is 20002 characters; the limit is 20000"),
    Case("text_1mb_in_one_streamed_piece", stream(["x" * (1 << 20)]), INVALID, "the limit is 20000"),
    Case("text_invalid_utf8_unary", raw("Synthesize", field(1, 2, make_config().SerializeToString()) +
                                        field(2, 2, b"\xc3\x28"), unary=True), INVALID, "text: is not valid UTF-8"),
    Case("text_invalid_utf8_in_config_voice", raw("StreamingSynthesize", field(1, 2, field(1, 2, b"\xff\xfe"))),
         INVALID, "config.voice: is not valid UTF-8"),
    Case("text_invalid_utf8_in_analyze", raw("AnalyzeText", field(1, 2, b"ok\xed\xa0\x80"), unary=True), INVALID,
         "text: is not valid UTF-8", kind="analyze"),
    Case("phoneme_unbalanced_open_bracket", stream(["我要[xie3个字。"], phoneme_mode=True), INVALID,
         "text: unbalanced '[' at position 2"),
    Case("phoneme_unbalanced_close_brace", stream(["他流血}了。"], phoneme_mode=True), INVALID,
         "text: unbalanced '}' at position 3"),
    Case("phoneme_invalid_tone", stream(["我要[xie9]个字。"], phoneme_mode=True), INVALID,
         "text: invalid pinyin 'xie9' at position 3"),
    Case("phoneme_not_a_syllable", synth("好[abc1]", phoneme_mode=True), INVALID, "text: invalid pinyin 'abc1'"),
    Case("phoneme_syllable_count_mismatch", stream(["{血液|xue4}。"], phoneme_mode=True), INVALID,
         "text: 1 pinyin syllables for '血液' at position 0"),
    Case("phoneme_reading_without_a_character", stream(["[xie3]好。"], phoneme_mode=True), INVALID,
         "text: reading at position 0 does not follow a Chinese character"),
    # ---- reference audio (RegisterVoice, inline config.reference_audio) ----------------------------------------
    Case("audio_empty", register(b""), INVALID, "audio: is empty", kind="voice"),
    Case("audio_truncated_header", register(GOOD_WAV[:20]), INVALID, "audio: cannot decode audio", kind="voice"),
    Case("audio_header_without_samples", register(GOOD_WAV[:44]), INVALID, "audio: contains no samples", kind="voice"),
    Case("audio_declared_length_longer_than_the_data_reads_the_data",
         register(with_data_length(GOOD_WAV, data_length(GOOD_WAV) * 10)), None, kind="voice",
         check=lambda r: abs(r.voice.reference_seconds - 4.2) < 0.1),
    Case("audio_declared_length_shorter_reads_the_declared_part",
         register(with_data_length(GOOD_WAV, data_length(GOOD_WAV) // 2)), None, kind="voice",
         check=lambda r: abs(r.voice.reference_seconds - 2.1) < 0.2 and "3-10 s" in r.warnings[0]),
    Case("audio_0_2_seconds", register(wav(REF[:int(0.2 * REF_RATE)])), INVALID,
         "audio: has 0.20 s of speech; at least 1 s is needed", kind="voice"),
    Case("audio_60_seconds", register(wav(np.tile(REF, 15)[:60 * REF_RATE])), INVALID,
         "audio: has 60.0 s of speech; at most 30 s", kind="voice"),
    Case("audio_silence", register(wav(np.zeros(4 * REF_RATE))), INVALID, "audio: is silence only", kind="voice"),
    Case("audio_white_noise", register(wav(np.random.default_rng(0).standard_normal(4 * REF_RATE) * 0.2)), INVALID,
         "noise", kind="voice"),
    Case("audio_steady_tone", register(wav(0.3 * np.sin(2 * np.pi * 440 * np.arange(4 * REF_RATE) / REF_RATE))),
         INVALID, "audio: is a steady sound", kind="voice"),
    Case("audio_rumble_below_the_voice_band",
         register(wav(np.cumsum(np.random.default_rng(2).standard_normal(4 * REF_RATE)) / 300)), INVALID,
         "audio: has almost no energy in the voice band", kind="voice"),
    Case("audio_8khz_is_resampled", register(wav(soxr.resample(REF, REF_RATE, 8000), 8000)), None, kind="voice",
         check=lambda r: abs(r.voice.reference_seconds - 4.2) < 0.1),
    Case("audio_96khz_is_resampled", register(wav(soxr.resample(REF, REF_RATE, 96000), 96000)), None, kind="voice",
         check=lambda r: abs(r.voice.reference_seconds - 4.2) < 0.1),
    Case("audio_6_channels_are_downmixed", register(wav(np.repeat(REF[:, None], 6, axis=1))), None, kind="voice",
         check=lambda r: abs(r.voice.reference_seconds - 4.2) < 0.1),
    Case("audio_float_nan_sample", register(with_sample(np.nan)), INVALID, "audio: contains NaN or infinite samples",
         kind="voice"),
    Case("audio_float_inf_sample", register(with_sample(np.inf)), INVALID, "audio: contains NaN or infinite samples",
         kind="voice"),
    pytest.param(Case("audio_mp3_is_decoded", register(mp3()), None, kind="voice",
                      check=lambda r: abs(r.voice.reference_seconds - 4.2) < 0.1),
                 marks=pytest.mark.skipif(not HAVE_MP3, reason="libsndfile without MP3")),
    pytest.param(Case("audio_mp3_with_garbage_frames", register(mp3(garbage_at(0.33, 2000))), INVALID,
                      "audio: cannot decode audio", kind="voice"),
                 marks=pytest.mark.skipif(not HAVE_MP3, reason="libsndfile without MP3")),
    pytest.param(Case("audio_mp3_with_a_few_garbage_bytes_is_resynced", register(mp3(garbage_at(0.5, 200))), None,
                      kind="voice", check=lambda r: abs(r.voice.reference_seconds - 4.2) < 0.2),
                 marks=pytest.mark.skipif(not HAVE_MP3, reason="libsndfile without MP3")),
    pytest.param(Case("audio_mp3_with_a_garbage_header", register(mp3(garbage_at(0.0, 400))), INVALID,
                      "audio: cannot decode audio (Format not recognised.)", kind="voice"),
                 marks=pytest.mark.skipif(not HAVE_MP3, reason="libsndfile without MP3")),
    Case("audio_text_file_named_wav_inline", stream(["你好。"], reference_audio=b"hello, I am a text file\n" * 40),
         INVALID, "config.reference_audio: cannot decode audio", kind="voice"),
    Case("audio_silence_inline", stream(["你好。"], reference_audio=wav(np.zeros(4 * REF_RATE))), INVALID,
         "config.reference_audio: is silence only", kind="voice"),
    Case("audio_over_10_mb", register(b"RIFF" + b"\0" * (10 * 1024 * 1024)), INVALID,
         "audio: over the 10485760 byte limit", kind="voice"),
    Case("audio_over_10_mb_inline", stream(["你好。"], reference_audio=b"\0" * (10 * 1024 * 1024 + 1)), INVALID,
         "config.reference_audio: 10485761 bytes is over the 10485760 byte limit", kind="voice"),
    Case("voice_name_empty", register(GOOD_WAV, name="  "), INVALID, "name: must be 1..100 characters", kind="voice"),
    Case("voice_name_too_long", register(GOOD_WAV, name="n" * 101), INVALID, "name: must be 1..100 characters",
         kind="voice"),
    Case("voice_delete_empty_id", lambda c, s: c.delete_voice(""), INVALID, "id: is empty", kind="voice"),
    Case("voice_delete_unknown_id", lambda c, s: c.delete_voice("v_" + "0" * 32), grpc.StatusCode.NOT_FOUND,
         "voice 'v_00000000000000000000000000000000' not found", kind="voice"),
    Case("voice_delete_malformed_id", lambda c, s: c.delete_voice("v_nope"), INVALID,
         "id: 'v_nope' is not a voice id (v_ and 32 hex digits)", kind="voice"),
    Case("voice_unknown_registered_id", stream(["你好。"], voice="v_" + "1" * 32), grpc.StatusCode.NOT_FOUND,
         "voice 'v_11111111111111111111111111111111' not found"),
    Case("voice_malformed_registered_id", stream(["你好。"], voice="v_doesnotexist"), INVALID,
         "config.voice: 'v_doesnotexist' is not a voice id (v_ and 32 hex digits)"),
    # ---- protocol ----------------------------------------------------------------------------------------------
    Case("config_unknown_encoding_enum", with_config(lambda c: setattr(c, "encoding", 99)), INVALID,
         "config.encoding: unknown encoding 99"),
    Case("config_chunk_size_0_is_the_server_default", stream(["好"], chunk_size=0), None,
         check=lambda r: audio_ms(r) > 200),
    Case("config_chunk_size_negative", stream(["你好。"], chunk_size=-1), INVALID, "config.chunk_size: -1 is outside 0..1000"),
    Case("config_seed_2_pow_63", stream(["你好。"], seed=2**63), INVALID, "config.seed: must be below 2^63"),
    Case("config_seed_max_uint64", stream(["你好。"], seed=2**64 - 1), INVALID, "config.seed: must be below 2^63"),
    Case("config_seed_varint_overflow_on_the_wire",
         raw("StreamingSynthesize", field(1, 2, field(8, 0, b"\xff" * 10 + b"\x01"))), INVALID,
         "request: cannot be parsed as a protobuf message"),
    Case("config_negative_sample_rate", stream(["你好。"], sample_rate=-8000), INVALID,
         "config.sample_rate: -8000 is not supported"),
    Case("config_speed_nan", stream(["你好。"], speed=float("nan")), INVALID, "config.speed: nan is outside 0.5..2.0"),
    Case("config_speed_negative", stream(["你好。"], speed=-1.0), INVALID, "config.speed: -1 is outside 0.5..2.0"),
    Case("config_unknown_language", stream(["你好。"], language="fr"), INVALID, "config.language: unknown language 'fr'"),
    Case("config_prompt_text_too_long", stream(["你好。"], prompt_text="字" * 1001), INVALID,
         "config.prompt_text: longer than 1000 characters"),
    Case("config_sent_again_after_text", raw("StreamingSynthesize", CONFIG, ser(text="你好"), CONFIG), INVALID,
         "config: config may only be sent once"),
    Case("message_with_nothing_set", raw("StreamingSynthesize", CONFIG, b""), INVALID,
         "request: empty message: set config, text, flush or cancel"),
    Case("message_that_is_not_protobuf", raw("StreamingSynthesize", CONFIG, b"\xff\xff\xff\xff"), INVALID,
         "request: cannot be parsed as a protobuf message"),
    # too big is a bad request, not a capacity limit (RESOURCE_EXHAUSTED would make clients retry it)
    Case("message_over_16_mb", raw("StreamingSynthesize", CONFIG, ser(text="x" * (17 << 20))),
         INVALID, "request: the message is 17825797 bytes; the limit is 16777216"),
    Case("unknown_fields_are_ignored", raw("StreamingSynthesize", CONFIG + field(15, 2, b"future"),
                                           ser(text="好") + field(99, 0, b"\x01")), None,
         check=lambda responses: len(responses) >= 2),
    Case("analyze_unknown_language", analyze("你好", language="xx"), INVALID, "language: unknown language 'xx'",
         kind="analyze"),
]


def still_serves(client, kind: str) -> None:
    """A good request of the same kind as the bad one is served."""
    if kind == "voice":
        resp = client.register_voice("good", GOOD_WAV)
        client.delete_voice(resp.voice.id)
        assert resp.voice.reference_seconds > 4
    elif kind == "analyze":
        assert client.analyze("好的。")[0].words
    else:
        assert client.stream(["好"], make_config()).summary.audio_ms > 200


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(stack, client, case: Case):
    if case.code is None:
        result = case.call(client, stack)
        if case.check is not None:
            assert case.check(result), result
    else:
        with pytest.raises(grpc.RpcError) as err:
            case.call(client, stack)
        assert err.value.code() == case.code, err.value.details()
        assert case.needle in (err.value.details() or ""), err.value.details()
        named = case.needle.split(": ")[0] if ": " in case.needle else ""
        if case.code == INVALID and named and " " not in named:     # the field also travels as a BadRequest
            assert from_rpc_error(err.value).field == named, err.value.trailing_metadata()
    still_serves(client, case.kind)


def test_text_of_10000_digits_is_cut_into_short_segments(stack, client):
    # before the fix it was one segment of 10,000 characters: no audio until all of it was synthesized
    segs = client.analyze("1" * 10000)
    assert len(segs) >= 80 and max(len(s.text) for s in segs) <= 120
    assert "".join(s.text for s in segs) == "1" * 10000 and segs[0].normalized.startswith("一一一")
    still_serves(client, "synth")


# ---- idle streams (a gateway of our own with a short idle timeout, in front of the session stack's stages) -----
@pytest.fixture(scope="module")
def idle_gateway(stack):
    own = make_stack(stack.tmp, base=stack, start=("gateway",), TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=0.5)
    yield own.gateway
    own.stop()


@pytest.mark.parametrize("sent, needle", [
    ([], "config: no config received"),
    (["config"], "text: no message for"),
    (["config", "text"], "text: no message for"),
], ids=["idle_before_config", "idle_after_config", "idle_after_text"])
def test_idle_stream_is_ended(idle_gateway, stack, sent, needle):
    from tts.v1 import tts_pb2_grpc

    release = threading.Event()

    def requests():
        for kind in sent:
            yield (tts_pb2.StreamingSynthesizeRequest(config=make_config()) if kind == "config"
                   else tts_pb2.StreamingSynthesizeRequest(text="你好。"))
        release.wait(30)              # neither another message nor a half-close

    with grpc.insecure_channel(idle_gateway.addr) as ch:
        try:
            with pytest.raises(grpc.RpcError) as err:
                list(tts_pb2_grpc.TextToSpeechStub(ch).StreamingSynthesize(requests(), timeout=30))
        finally:
            release.set()
        assert err.value.code() == INVALID and needle in err.value.details(), err.value.details()
        res_stub = tts_pb2_grpc.TextToSpeechStub(ch)
        ok = list(res_stub.StreamingSynthesize(iter([tts_pb2.StreamingSynthesizeRequest(config=make_config()),
                                                     tts_pb2.StreamingSynthesizeRequest(text="好")]), timeout=60))
        assert ok[-1].summary.audio_ms > 200

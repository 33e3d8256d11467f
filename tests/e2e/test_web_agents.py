"""``POST /v1/audio/speech`` as voice-agent frameworks use it (Pipecat's and LiveKit's OpenAI TTS services speak to it
through the real OpenAI SDK): OpenAI's current voice names, a request id on every response that is the gateway's id
for the synthesis, ``instructions`` accepted and reported ignored, and a caller that hangs up mid-body (every
interruption) logged at INFO, counted, and its synthesis cancelled at once. Real stack, real web process."""
from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import grpc
import openai
import pytest

from tests.e2e.webstack import TOKENS, webstack  # noqa: F401  (fixture)
from tests.procs import wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts_client import TTSClient

SHORT = "您好，请问有什么可以帮您？"
# ~20 segments, tens of seconds of audio: a synthesis that is far from done when its caller hangs up
LONG = "".join(f"这是第{i}句话，我们正在测试语音合成服务。" for i in range(1, 11))
REF = (Path(__file__).resolve().parents[1] / "data" / "BAC009S0764W0121.wav").read_bytes()
DISCONNECTS = "tts_web_client_disconnects_total"
ROUTE = "/v1/audio/speech"


def sdk(webstack, tenant: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=webstack.url + "/v1", api_key=TOKENS[tenant], max_retries=0, timeout=120)


def pcm(webstack, **kw) -> tuple[bytes, dict]:
    r = sdk(webstack).audio.speech.with_raw_response.create(model="tts-1", input=SHORT, response_format="pcm", **kw)
    return r.content, r.headers


def lines_for(webstack, rid: str, msg: str | None = None) -> list[dict]:
    return [r for r in webstack.web.log_lines() if r.get("request_id") == rid and (msg is None or r["msg"] == msg)]


def decoder_streams(webstack) -> int:
    with grpc.insecure_channel(webstack.stack.decoder.addr) as ch:
        info = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=5)
    return sum(e.active_streams for e in info.engines)


# ---- voices ------------------------------------------------------------------------------------------------------------
def test_openai_voice_names_speak_our_default_voice(webstack):
    """marin and cedar (OpenAI's newest) were a 400; every OpenAI name is our default voice, as no name is."""
    default, _ = pcm(webstack, voice="alloy")
    assert len(default) > 24000
    for name in ("marin", "cedar"):
        audio, _ = pcm(webstack, voice=name)
        assert audio == default, name              # Kokoro is deterministic: the same voice gives the same audio


def test_our_voice_names_and_registered_ids_still_go_through(webstack):
    def spoken(voice, fmt="pcm") -> tuple[bytes, str]:
        """The audio, and the voice the decoder says it spoke (the web's summary line for the request)."""
        r = sdk(webstack).audio.speech.with_raw_response.create(model="tts-1", input="你好。", response_format=fmt,
                                                                  voice=voice)
        rid = r.headers["x-request-id"]
        done = wait_until(lambda: lines_for(webstack, rid, "speech done"), 10, "the web's summary line")
        return r.content, done[0]["voice"]

    default_audio, default_voice = spoken("alloy")
    with TTSClient(webstack.gateway.addr, token=TOKENS["alice"]) as c:
        other = next(v.id for v in c.voices() if v.builtin and v.engine == "kokoro" and v.id != default_voice)
        vid = c.register_voice("agent voice", REF).voice.id
    try:
        audio, voice = spoken(other)
        assert voice == other and audio != default_audio
        # a registered voice, by id and as OpenAI's custom voice object {"id": ...}: the decoder spoke its reference
        spoke = set()
        for ref in (vid, {"id": vid}):
            audio, voice = spoken(ref)
            assert voice.startswith("ref:") and len(audio) > 0
            spoke.add(voice)
        assert len(spoke) == 1
        with pytest.raises(openai.NotFoundError):
            sdk(webstack).audio.speech.create(model="tts-1", input="你好", voice="v_" + "0" * 32)
    finally:
        with TTSClient(webstack.gateway.addr, token=TOKENS["alice"]) as c:
            c.delete_voice(vid)


# ---- request id ----------------------------------------------------------------------------------------------------------
def test_every_response_says_its_request_id_and_it_is_the_gateways(webstack):
    # the caller's id: on the audio response, and the id the gateway's summary carries
    r = sdk(webstack).audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input=SHORT, extra_headers={"X-Request-Id": "agent-turn-7"})
    assert r.headers["x-request-id"] == "agent-turn-7"
    done = wait_until(lambda: lines_for(webstack, "agent-turn-7", "speech done"), 10, "the web's summary line")
    assert done[0]["gateway_request_id"] == "agent-turn-7"
    # none sent: one is made up, handed to the gateway, and returned
    r = sdk(webstack).audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="你好。")
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", rid)
    done = wait_until(lambda: lines_for(webstack, rid, "speech done"), 10, "the web's summary line")
    assert done[0]["gateway_request_id"] == rid
    # errors too: ours (400), the gateway's (401), aiohttp's (404), and a caller's id that is no id (a new one)
    with pytest.raises(openai.BadRequestError) as err:
        sdk(webstack).audio.speech.create(model="tts-1", voice="alloy", input="你好", response_format="vorbis",
                                          extra_headers={"X-Request-Id": "agent-turn-8"})
    assert err.value.response.headers["x-request-id"] == "agent-turn-8"
    assert err.value.request_id == "agent-turn-8"             # what the SDK (and LiveKit's plugin) reads
    bad = openai.OpenAI(base_url=webstack.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.audio.speech.create(model="tts-1", voice="alloy", input="你好", extra_headers={"X-Request-Id": "t-9"})
    assert err.value.response.headers["x-request-id"] == "t-9"
    with pytest.raises(openai.BadRequestError) as err:
        sdk(webstack).audio.speech.create(model="tts-1", voice="alloy", input="你好",
                                          extra_headers={"X-Request-Id": "no spaces allowed"})
    assert err.value.body["param"] == "X-Request-Id"
    assert re.fullmatch(r"[0-9a-f]{16}", err.value.response.headers["x-request-id"])
    with pytest.raises(openai.NotFoundError) as err:
        sdk(webstack).post("/audio/nothing-here", cast_to=object, body={})
    assert re.fullmatch(r"[0-9a-f]{16}", err.value.response.headers["x-request-id"])


async def test_the_page_socket_hands_its_request_id_to_the_gateway(webstack):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(webstack.url + "/api/synthesize", headers={"X-Request-Id": "page-req-1"}) as ws:
            await ws.send_json({"type": "start", "text": "你好。"})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] in ("done", "error"):
                    done = json.loads(msg.data)
                    break
    assert done["type"] == "done" and done["summary"]["request_id"] == "page-req-1"


# ---- instructions ----------------------------------------------------------------------------------------------------------
def test_instructions_are_accepted_ignored_and_said_to_be(webstack):
    plain, headers = pcm(webstack, voice="alloy")
    assert "x-tts-ignored" not in headers
    directed, headers = pcm(webstack, voice="alloy", instructions="Speak in a cheerful and positive tone.")
    assert headers["x-tts-ignored"] == "instructions"
    assert directed == plain                       # nothing of it reaches the engine
    # LiveKit asks gpt-4o-mini-tts for stream_format "sse" and reads what the Content-Type says it got
    r = sdk(webstack).audio.speech.with_raw_response.create(
        model="gpt-4o-mini-tts", voice="ash", input="你好。", response_format="pcm", stream_format="sse",
        instructions="calm")
    assert r.headers["content-type"].startswith("audio/pcm")
    assert r.headers["x-tts-ignored"] == "instructions, stream_format"
    with pytest.raises(openai.BadRequestError) as err:
        sdk(webstack).audio.speech.create(model="tts-1", voice="alloy", input="你好", extra_body={"instructions": 5})
    assert err.value.body["param"] == "instructions"


# ---- a caller that hangs up ----------------------------------------------------------------------------------------------
async def _hang_up(webstack, body: dict, rid: str, after_bytes: int) -> None:
    """A real HTTP client (a socket): sends the request, reads the response until ``after_bytes`` of it arrived (0:
    until the decoder is working on it), then closes the connection without reading on."""
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", webstack.web.port)
    writer.write(f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\nX-Request-Id: {rid}\r\n\r\n".encode() + data)
    await writer.drain()
    if after_bytes:
        got = b""
        while len(got) < after_bytes:
            more = await asyncio.wait_for(reader.read(65536), 60)
            assert more, got[:200]
            got += more
        assert got.startswith(b"HTTP/1.1 200")
    else:
        await asyncio.to_thread(wait_until, lambda: decoder_streams(webstack) > 0, 60, "the synthesis to start")
    writer.close()


def _no_errors_since(webstack, start: int) -> None:
    lines = webstack.web.log_lines()[start:]
    assert not [r for r in lines if r["level"] not in ("info", "debug")], lines
    assert not any("exc" in r or "Traceback" in r["msg"] for r in lines), lines


async def test_a_caller_hanging_up_mid_stream_is_an_ordinary_event(webstack):
    start, before = len(webstack.web.log_lines()), webstack.web.metric(DISCONNECTS, route=ROUTE)
    assert decoder_streams(webstack) == 0
    await _hang_up(webstack, {"input": LONG, "response_format": "pcm"}, "hangup-1", after_bytes=20000)
    left = await asyncio.to_thread(wait_until, lambda: lines_for(webstack, "hangup-1", "client disconnected; "
                                                                 "request cancelled"), 20, "the hang-up's log line")
    assert left[0]["level"] == "info" and left[0]["route"] == ROUTE and left[0]["sent_bytes"] > 0
    assert webstack.web.metric(DISCONNECTS, route=ROUTE) == before + 1
    await asyncio.to_thread(wait_until, lambda: decoder_streams(webstack) == 0, 20, "the decoder stream to end")
    assert not lines_for(webstack, "hangup-1", "speech done")        # it did not run to its end
    _no_errors_since(webstack, start)


async def test_a_caller_hanging_up_before_any_audio_cancels_the_synthesis_at_once(webstack):
    """wav is sent whole at the end: nothing is written while it is synthesized, so only the hang-up itself (not a
    failed write) can stop it; the decoder's stream ends long before the tens of seconds of audio are made."""
    start, before = len(webstack.web.log_lines()), webstack.web.metric(DISCONNECTS, route=ROUTE)
    assert decoder_streams(webstack) == 0
    t0 = time.monotonic()
    await _hang_up(webstack, {"input": LONG, "response_format": "wav"}, "hangup-2", after_bytes=0)
    left = await asyncio.to_thread(wait_until, lambda: lines_for(webstack, "hangup-2", "client disconnected; "
                                                                 "request cancelled"), 10, "the hang-up's log line")
    assert left[0]["level"] == "info" and left[0]["sent_bytes"] == 0
    await asyncio.to_thread(wait_until, lambda: decoder_streams(webstack) == 0, 10, "the decoder stream to end")
    assert webstack.web.metric(DISCONNECTS, route=ROUTE) == before + 1
    assert not lines_for(webstack, "hangup-2", "speech done"), time.monotonic() - t0
    _no_errors_since(webstack, start)

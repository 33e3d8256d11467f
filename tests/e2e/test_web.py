"""The web process's HTTP API against the real stack: OpenAI-compatible streaming speech, error mapping from gRPC
status to HTTP, the page's JSON endpoints and its synthesis WebSocket."""
from __future__ import annotations

import io
import json
import struct
import threading
import wave
import zipfile

import aiohttp
import numpy as np
import openai
import pytest
import soundfile as sf

from tests.e2e.webstack import TOKENS, WebProc, webstack  # noqa: F401  (fixture)
from tests.procs import free_port
from tts_client import TTSClient
from tts_client.client import make_config

LONG = "您好，请问有什么可以帮您？我在银行工作。今天是2026年1月13日，气温零下三度。明天见。"


def auth(tenant: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


async def post_speech(url, body, headers=None):
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/audio/speech", json=body, headers=headers or {}) as r:
            return r.status, dict(r.headers), await r.read()


# ---- streaming ---------------------------------------------------------------------------------------------------
async def test_speech_streams_mp3_by_default_in_http_chunks(webstack):
    async with aiohttp.ClientSession() as s:
        async with s.post(webstack.url + "/v1/audio/speech",
                          json={"model": "tts-1", "input": LONG, "voice": "alloy"}) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"] == "audio/mpeg"          # OpenAI's default response_format: mp3
            assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
            http_chunks, body, data = 0, b"", b""
            async for data, end_of_chunk in r.content.iter_chunks():
                body += data
                http_chunks += end_of_chunk
    # MP3 at 24 kHz, decoded by libsndfile (mpg123), not by the FFmpeg that encoded it
    audio, rate = sf.read(io.BytesIO(body), dtype="float32")
    assert rate == 24000 and len(audio) > 24000 and np.abs(audio).max() > 0.05
    # one HTTP chunk per audio chunk from the gateway, written as each arrived: several segments → several chunks
    with TTSClient(webstack.gateway.addr, token=TOKENS["admin"]) as c:
        segments = len(c.analyze(LONG))
    assert segments >= 3
    assert http_chunks >= segments


async def test_speech_wav_is_a_complete_file(webstack):
    """A WAV header states the length: wav is sent whole, so the file a client saves says how long it is."""
    status, headers, body = await post_speech(webstack.url, {"input": "你好。", "response_format": "wav"})
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    assert int(headers["Content-Length"]) == len(body)
    with wave.open(io.BytesIO(body)) as w:
        assert w.getframerate() == 24000 and w.getnframes() == (len(body) - 44) // 2 > 2400


# ---- the OpenAI SDK (pinned in requirements.txt) against our endpoint -----------------------------------------------
def _sdk(webstack) -> openai.OpenAI:
    return openai.OpenAI(base_url=webstack.url + "/v1", api_key=TOKENS["alice"], max_retries=0, timeout=120)


def test_openai_sdk_gets_mp3_by_default_and_opus_on_request(webstack, tmp_path):
    sdk = _sdk(webstack)
    mp3 = sdk.audio.speech.create(model="tts-1", voice="alloy", input="您好，请问有什么可以帮您？")
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    audio, rate = sf.read(io.BytesIO(mp3.content), dtype="float32")
    assert rate == 24000 and len(audio) > 24000
    opus = sdk.audio.speech.create(model="tts-1", voice="alloy", input="您好，请问有什么可以帮您？",
                                   response_format="opus")
    assert opus.response.headers["content-type"] == "audio/ogg" and opus.content[:4] == b"OggS"
    audio2, rate2 = sf.read(io.BytesIO(opus.content), dtype="float32")
    assert rate2 == 24000 and abs(len(audio2) - len(audio)) < 2400      # the same sentence, 0.1 s apart at most
    # the SDK's streaming download saves a WAV whose header is right
    path = tmp_path / "out.wav"
    with sdk.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="你好。",
                                                         response_format="wav") as r:
        r.stream_to_file(path)
    with wave.open(str(path)) as w:
        assert w.getnframes() == (path.stat().st_size - 44) // 2 and w.getnframes() > 2400


def test_openai_sdk_sees_our_errors(webstack):
    with pytest.raises(openai.BadRequestError) as err:
        _sdk(webstack).audio.speech.create(model="tts-1", voice="alloy", input="你好", response_format="vorbis")
    assert err.value.body["param"] == "response_format"


async def test_speech_pcm_and_sample_rate(webstack):
    status, headers, body = await post_speech(webstack.url, {"input": "你好。", "response_format": "pcm",
                                                             "sample_rate": 16000, "speed": 1.2})
    assert status == 200
    assert headers["Content-Type"].startswith("audio/pcm") and headers["X-Sample-Rate"] == "16000"
    assert not body.startswith(b"RIFF") and len(body) % 2 == 0 and len(body) > 3200


# ---- errors ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body,param", [
    ({"input": "你好", "speed": 5}, "speed"),                       # the gateway's INVALID_ARGUMENT config.speed
    ({"input": "你好", "response_format": "vorbis"}, "response_format"),
    ({"input": "你好", "response_format": "opus", "sample_rate": 22050}, "sample_rate"),     # not an Opus rate
    ({"model": "tts-1"}, "input"),
    ({"input": "。。。"}, "input"),                                  # gateway: text has nothing to speak
    ({"input": "你好", "model": "whisper"}, "model"),
    ({"input": "你好", "speed": "fast"}, "speed"),
])
async def test_invalid_argument_is_400_naming_the_field(webstack, body, param):
    status, headers, raw = await post_speech(webstack.url, body)
    assert status == 400, raw
    err = json.loads(raw)["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert err["message"].startswith(param + ":"), err


async def test_unauthenticated_is_401(webstack):
    status, headers, raw = await post_speech(webstack.url, {"input": "你好"}, {"Authorization": "Bearer nope"})
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(raw)["error"]["code"] == "UNAUTHENTICATED"


async def test_unknown_voice_is_404(webstack):
    status, _, raw = await post_speech(webstack.url, {"input": "你好", "voice": "v_" + "0" * 32})
    assert status == 404, raw
    assert json.loads(raw)["error"]["code"] == "NOT_FOUND"


async def test_over_the_stream_limit_is_429_with_retry_after(webstack):
    """alice may hold 2 streams; two open gRPC streams (held by the test) make a third call RESOURCE_EXHAUSTED."""
    release, ready, threads = threading.Event(), [threading.Event(), threading.Event()], []

    def hold(i):
        def pieces():
            yield "你好。"
            yield None                       # flush: audio comes back, so the slot is surely taken
            release.wait(15)
        with TTSClient(webstack.gateway.addr, token=TOKENS["alice"]) as c:
            c.stream(pieces(), make_config(), on_chunk=lambda _c: ready[i].set())

    for i in range(2):
        threads.append(threading.Thread(target=hold, args=(i,), daemon=True))
        threads[-1].start()
    try:
        assert all(ev.wait(30) for ev in ready)
        status, headers, raw = await post_speech(webstack.url, {"input": "你好"}, auth("alice"))
    finally:
        release.set()
        for t in threads:
            t.join(20)
    assert status == 429, raw
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"


def test_admin_rpcs_are_403_for_other_tenants(webstack):
    import urllib.error
    import urllib.request

    for method, path, body in (("PUT", "/api/dictionary", b'{"content": ""}'), ("POST", "/api/cache/clear", b"")):
        req = urllib.request.Request(webstack.url + path, data=body, method=method,
                                     headers={**auth("alice"), "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        assert exc.value.code == 403
        assert json.loads(exc.value.read())["error"]["code"] == "PERMISSION_DENIED"


async def test_gateway_down_is_503(webstack, tmp_path):
    web = WebProc(f"127.0.0.1:{free_port()}", tmp_path).start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(web.url + "/healthz") as r:
                assert r.status == 503 and (await r.json())["gateway"] == "DOWN"
            async with s.get(web.url + "/livez") as r:          # the process itself is fine: no restart wanted
                assert r.status == 200
        status, headers, raw = await post_speech(web.url, {"input": "你好"})
        assert status == 503 and headers["Retry-After"] == "1"
        assert json.loads(raw)["error"]["code"] == "UNAVAILABLE"
    finally:
        web.stop()


# ---- the page's API ------------------------------------------------------------------------------------------------
async def test_page_health_voices_analyze(webstack):
    async with aiohttp.ClientSession() as s:
        async with s.get(webstack.url + "/") as r:
            assert r.status == 200 and "Streaming TTS" in await r.text()
        async with s.get(webstack.url + "/healthz") as r:
            assert r.status == 200 and (await r.json()) == {"status": "ok", "gateway": "SERVING"}
        async with s.get(webstack.url + "/api/voices") as r:
            data = await r.json()
            assert any(v["builtin"] for v in data["voices"])
            # the page's model list: the decoders' engines, as the gateway lists them
            assert "kokoro" in data["models"] and data["default_model"] in data["models"]
        async with s.post(webstack.url + "/api/analyze", json={"text": "我在银行工作。"}) as r:
            seg = (await r.json())["segments"][0]
            assert seg["normalized"] == "我在银行工作。"
            assert ["yin2", "hang2"] in [w["pinyin"] for w in seg["words"]]
        async with s.post(webstack.url + "/api/analyze", json={"text": "我用iPhone。"}) as r:
            words = (await r.json())["segments"][0]["words"]
            # the page's analysis view shows an English word's pronunciation: its ARPAbet pieces
            assert [w["phonemes"] for w in words if w["text"] == "iPhone"] == ["AY1 | F OW2 N"]


async def test_websocket_synthesis_streams_and_saves_result(webstack):
    chunks, metas, done = [], [], None
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(webstack.url + "/api/synthesize") as ws:
            await ws.send_json({"type": "start", "text": LONG, "sample_rate": 16000, "seed": 7, "use_cache": False})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    chunks.append(msg.data)
                else:
                    m = json.loads(msg.data)
                    if m["type"] == "chunk":
                        metas.append(m)
                    elif m["type"] == "done":
                        done = m
                    else:
                        pytest.fail(f"unexpected message {m}")
        assert done is not None and len(chunks) == len(metas) >= 3
        assert all(m["sample_rate"] == 16000 for m in metas) and metas[0]["first_chunk_ms"] > 0
        assert done["summary"]["segments"] >= 3
        async with s.get(webstack.url + done["result"]["url"]) as r:
            wav = await r.read()
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
    assert wav[:4] == b"RIFF" and struct.unpack("<I", wav[40:44])[0] == len(wav) - 44
    assert wav[44:] == b"".join(chunks)


async def test_websocket_barge_in_cancel_answer_and_next_reply(webstack):
    """With barge_in the socket stays open after its text: a cancel with the played position is answered with what
    was heard, a bad one is rejected in-band (the stream goes on), text after it is the next reply, end → done."""
    got: list = []

    async def until(ws, kind):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                got.append(json.loads(msg.data))
                if got[-1]["type"] == kind:
                    return got[-1]
        pytest.fail(f"the socket closed before a {kind!r} message: {got[-3:]}")

    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(webstack.url + "/api/synthesize") as ws:
            await ws.send_json({"type": "start", "text": LONG, "barge_in": True, "alignment": True})
            first = await until(ws, "chunk")
            assert first["reply"] == 0 and first["span"][0] == 0
            await ws.send_json({"type": "cancel", "played_ms": "soon"})
            rejected = await until(ws, "rejected")
            assert rejected["field"] == "cancel.played_ms" and rejected["message"].startswith("cancel.played_ms:")
            played = first["duration_ms"] / 2
            await ws.send_json({"type": "cancel", "played_ms": played})
            cut = await until(ws, "interrupted")
            assert cut["played_ms"] == pytest.approx(played) and cut["heard_text"] + cut["unspoken_text"] == LONG
            await ws.send_json({"type": "text", "text": "好的，再见。"})
            await ws.send_json({"type": "end"})
            done = await until(ws, "done")
    after = got[got.index(cut) + 1:]
    assert {m["reply"] for m in after if m["type"] == "chunk"} == {1}
    assert done["summary"]["interruptions"] == 1 and done["summary"]["replies"] == 2


async def test_websocket_error_message(webstack):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(webstack.url + "/api/synthesize") as ws:
            await ws.send_json({"type": "start", "text": "你好", "sample_rate": 12345})
            m = await ws.receive_json(timeout=30)
    assert m["type"] == "error" and m["status"] == 400 and m["field"] == "config.sample_rate", m


async def test_dictionary_editor_applies_without_restart(webstack):
    async with aiohttp.ClientSession() as s:
        async with s.get(webstack.url + "/api/dictionary") as r:
            before = await r.json()
            assert r.status == 200 and before["entries"] > 0 and '"血"' in before["content"]
        async with s.put(webstack.url + "/api/dictionary", json={"content": '{"word": "重复", "pinyin": "nope"}\n'}) as r:
            err = (await r.json())["error"]
            assert r.status == 400 and err["param"] == "content" and "line 1" in err["message"]
        added = before["content"].rstrip("\n") + '\n{"word": "工作", "pinyin": "gong1 zuo1"}\n'
        async with s.put(webstack.url + "/api/dictionary", json={"content": added}) as r:
            assert r.status == 200 and (await r.json())["entries"] == before["entries"] + 1
        try:
            async with s.post(webstack.url + "/api/analyze", json={"text": "我在银行工作。"}) as r:
                words = (await r.json())["segments"][0]["words"]
                assert ["gong1", "zuo1"] in [w["pinyin"] for w in words]
        finally:
            async with s.put(webstack.url + "/api/dictionary", json={"content": before["content"]}) as r:
                assert r.status == 200
        async with s.post(webstack.url + "/api/analyze", json={"text": "我在银行工作。"}) as r:
            words = (await r.json())["segments"][0]["words"]
            assert ["gong1", "zuo4"] in [w["pinyin"] for w in words]
    assert webstack.dict_path.read_text(encoding="utf-8") == before["content"]


async def test_free_cache(webstack):
    async with aiohttp.ClientSession() as s:
        async with s.post(webstack.url + "/api/cache/clear") as r:
            body = await r.json()
    assert r.status == 200 and body["decoders"] == 1 and "freed_bytes" in body


# ---- batch jobs ------------------------------------------------------------------------------------------------------
BATCH = ('{"uttid": "b1", "syn_text": "你好。"}\n'
         '{"uttid": "b2", "syn_text": "谢谢。", "seed": 3}\n'
         '{"uttid": "b3", "syn_text": "再见。", "prompt_speech": "no_such_voice"}\n')


async def test_batch_submit_watch_download(webstack):
    async with aiohttp.ClientSession() as s:
        async with s.post(webstack.url + "/api/batches?name=web&sample_rate=16000", data=BATCH.encode()) as r:
            job = await r.json()
            assert r.status == 201, job
            assert job["total"] == 3 and job["state"] in ("queued", "running")
        events, finished = [], []
        async with s.get(webstack.url + f"/api/batches/{job['id']}/watch") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/x-ndjson"
            async for line in r.content:
                ev = json.loads(line)
                events.append(ev)
                finished += ev["finished"]
        assert events[-1]["job"]["state"] == "done"
        assert (events[-1]["job"]["done"], events[-1]["job"]["failed"]) == (2, 1)
        assert sorted(f["uttid"] for f in finished) == ["b1", "b2", "b3"]
        async with s.get(webstack.url + "/api/batches") as r:
            assert job["id"] in [j["id"] for j in (await r.json())["jobs"]]
        async with s.get(webstack.url + f"/api/batches/{job['id']}/results/b2.wav") as r:
            wav = await r.read()
            assert r.status == 200 and wav[:4] == b"RIFF" and struct.unpack("<I", wav[24:28])[0] == 16000
        async with s.get(webstack.url + f"/api/batches/{job['id']}/results/b3.wav") as r:
            assert r.status == 404 and "prompt_speech" in (await r.json())["error"]["message"]
        async with s.get(webstack.url + f"/api/batches/{job['id']}/download") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
            zf = zipfile.ZipFile(io.BytesIO(await r.read()))
        assert sorted(zf.namelist()) == ["b1.wav", "b2.wav", "results.jsonl"]
        records = [json.loads(x) for x in zf.read("results.jsonl").decode().splitlines()]
        assert [r_["status"] for r_ in records] == ["done", "done", "failed"]
        async with s.get(webstack.url + "/api/batches/b_" + "0" * 32) as r:
            assert r.status == 404
        async with s.post(webstack.url + "/api/batches", data=b"  \n") as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "jsonl"
        async with s.get(webstack.url + f"/api/batches/{job['id']}", headers=auth("alice")) as r:
            assert r.status == 404                  # another tenant's job does not exist for alice

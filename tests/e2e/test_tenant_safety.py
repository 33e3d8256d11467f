"""One tenant must never hurt another (issue 14), tried on a stack of real processes with auth on and two tenants,
alice and bob: two Redis roles (a noeviction durable store, an allkeys-lfu cache), two frontends, the speaker, a
decoder, two gateway replicas (g1 → frontend 1, g2 → frontend 2, one store) and the web process in front of g1.
Every test asserts that the other tenant keeps being served.
"""
from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from services.gateway.auth import hash_token
from tests.e2e.webstack import WebProc
from tests.procs import ROOT, RedisServer, free_port, make_stack, rpc_error, served, wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.v1 import tts_pb2
from tts_client import TTSClient
from tts_client.client import make_config

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("alice", "bob", "admin")}
MAX_VOICES, MAX_JOBS, MAX_UNFINISHED, MAX_STREAMS = 2, 3, 2, 2
MAX_OUTPUT = 120 * 1024
FAST = make_config(sample_rate=16000)
WAV = (ROOT / "tests" / "data" / "BAC009S0764W0121.wav").read_bytes()


class SafetyStack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.store = RedisServer(log_dir=tmp, policy="noeviction").start()
        self.inputs = tmp / "inputs"
        (self.inputs / "alice").mkdir(parents=True)
        (self.inputs / "bob").mkdir(parents=True)
        self.outputs = tmp / "outputs"
        # the speaker (with the embedding cache's own redis) and the decoder, shared by two frontend + gateway replicas
        self.stages = make_stack(tmp, start=("redis", "speaker", "decoder"))
        self.cache, self.speaker, self.decoder = self.stages.redis, self.stages.speaker, self.stages.decoder
        self.replicas = []
        for n in range(2):                      # each replica has its own copy of the file, as pods do
            path = tmp / f"replace_dict_{n}.jsonl"
            shutil.copy(ROOT / "configs" / "G2P_replace_dict.jsonl", path)
            self.replicas.append(make_stack(
                tmp, base=self.stages, start=("frontend", "gateway"),
                TTS_FRONTEND_REPLACE_DICT_PATH=path, TTS_FRONTEND_REDIS_URL=self.store.url,
                TTS_GATEWAY_REDIS_URL=self.store.url,
                TTS_GATEWAY_TOKENS=",".join(f"{t}:{hash_token(tok)}" for t, tok in TOKENS.items()),
                TTS_GATEWAY_ADMIN_TENANTS="admin", TTS_GATEWAY_RATE_PER_TENANT=0,
                TTS_GATEWAY_MAX_STREAMS_PER_TENANT=MAX_STREAMS, TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=30,
                TTS_GATEWAY_MAX_VOICES_PER_TENANT=MAX_VOICES, TTS_GATEWAY_MAX_JOBS_PER_TENANT=MAX_JOBS,
                TTS_GATEWAY_BATCH_MAX_JOBS_PER_TENANT=MAX_UNFINISHED,
                TTS_GATEWAY_MAX_OUTPUT_BYTES_PER_TENANT=MAX_OUTPUT, TTS_GATEWAY_BATCH_INPUT_DIR=self.inputs,
                TTS_GATEWAY_BATCH_OUTPUT_DIR=self.outputs, TTS_GATEWAY_BATCH_WATCH_POLL_S=0.2,
                TTS_GATEWAY_MAX_MESSAGE_MB=4))
        self.frontends = [r.frontend for r in self.replicas]
        self.gateways = [r.gateway for r in self.replicas]
        web = WebProc(self.gateways[0].addr, tmp)
        web.env["TTS_WEB_WS_SEND_TIMEOUT_S"] = "2"
        web.env["TTS_WEB_WS_HEARTBEAT_S"] = "600"       # so that only the send timeout can drop a stalled reader
        self.web = web.start()

    def client(self, tenant: str, gateway: int = 0) -> TTSClient:
        return TTSClient(self.gateways[gateway].addr, token=TOKENS[tenant], timeout=60)

    def stop(self):
        self.web.stop()
        for replica in reversed(self.replicas):
            replica.stop()
        self.stages.stop()
        self.store.stop()


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    s = SafetyStack(tmp_path_factory.mktemp("safety"))
    yield s
    s.stop()


def follow(client: TTSClient, job_id: str) -> tts_pb2.BatchJob:
    last = None
    for event in client.watch_batch(job_id, timeout=300):
        last = event.job
    return last


def jsonl(n: int, prefix: str) -> bytes:
    return "".join(json.dumps({"uttid": f"{prefix}{i:03d}", "syn_text": "你好"}) + "\n" for i in range(n)).encode()


# ---- 1. quotas in the durable store, across replicas ------------------------------------------------------------
def test_voice_quota_holds_across_gateway_replicas(st):
    with st.client("alice", 0) as a1, st.client("alice", 1) as a2, st.client("bob", 1) as b:
        ids = [a1.register_voice("one", WAV).voice.id, a2.register_voice("two", WAV).voice.id]
        for client in (a1, a2):                 # the count is shared: neither replica lets a third one in
            err = rpc_error(client.register_voice, "three", WAV)
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "voices" in err.details() and "TTS_GATEWAY_MAX_VOICES_PER_TENANT" in err.details()
        bob_voice = b.register_voice("bobs", WAV).voice.id           # bob has his own quota
        mine = {v.id for v in a1.voices() if not v.builtin}
        assert mine == set(ids)                 # alice's voices are all there, bob's write touched none
        assert bob_voice not in mine
        a2.delete_voice(ids[0])                 # a delete gives the unit back, on any replica
        ids[0] = a1.register_voice("three", WAV).voice.id
        assert served(b) and served(a1)
        for v in ids:
            a1.delete_voice(v)
        b.delete_voice(bob_voice)


def test_batch_job_quota_delete_and_disk_bound(st):
    with st.client("alice", 0) as a1, st.client("alice", 1) as a2, st.client("bob", 0) as b:
        jobs = []
        for i in range(MAX_JOBS):
            client = (a1, a2)[i % 2]
            jobs.append(client.submit_batch(jsonl=jsonl(1, f"j{i}-"), config=FAST))
            assert follow(client, jobs[-1].id).state == tts_pb2.BATCH_DONE
        err = rpc_error(a2.submit_batch, jsonl=jsonl(1, "x"), config=FAST)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "TTS_GATEWAY_MAX_JOBS_PER_TENANT" in err.details()
        bob_job = b.submit_batch(jsonl=jsonl(1, "b"), config=FAST)          # bob is not affected
        assert follow(b, bob_job.id).state == tts_pb2.BATCH_DONE

        folder = st.outputs / jobs[0].output_dir
        assert (folder / "j0-000.wav").is_file()
        freed = a1.delete_batch(jobs[0].id).freed_bytes
        assert freed > 1000 and not folder.exists()
        assert rpc_error(a2.get_batch, jobs[0].id).code() == grpc.StatusCode.NOT_FOUND
        assert rpc_error(b.delete_batch, jobs[1].id).code() == grpc.StatusCode.NOT_FOUND    # not bob's to delete
        assert a2.get_batch(jobs[1].id).done == 1

        # the output bound: the job that would write past it fails its later lines naming the quota
        big = a1.submit_batch(jsonl=jsonl(12, "o"), config=FAST)
        final = follow(a1, big.id)
        assert final.state == tts_pb2.BATCH_DONE and final.done >= 1 and final.failed >= 1
        errors = a1.get_batch(big.id).errors
        assert all("output_bytes" in e.error and "TTS_GATEWAY_MAX_OUTPUT_BYTES_PER_TENANT" in e.error
                   for e in errors), errors
        on_disk = sum(p.stat().st_size for p in (st.outputs / "alice").rglob("*.wav"))
        assert on_disk <= MAX_OUTPUT
        assert follow(b, b.submit_batch(jsonl=jsonl(2, "b2-"), config=FAST).id).done == 2    # bob still writes
        for job in (*jobs[1:], big):
            a2.delete_batch(job.id)
        assert not list((st.outputs / "alice").glob("b_*"))
        assert follow(a1, a1.submit_batch(jsonl=jsonl(1, "again"), config=FAST).id).done == 1


def test_a_full_store_fails_the_writer_not_the_other_tenants_data(st):
    import redis

    r = redis.Redis.from_url(st.store.url)
    with st.client("alice") as a, st.client("bob") as b:
        voice = a.register_voice("kept", WAV).voice.id
        used = r.info("memory")["used_memory"]
        r.config_set("maxmemory", str(used + 256 * 1024))        # the store is all but full
        try:
            # bob (quota left) writes until the store is full: his write fails as RESOURCE_EXHAUSTED, nothing evicted
            err = None
            for i in range(40):
                try:
                    b.submit_batch(jsonl=jsonl(200, f"fill{i}-") + b" " * 20000, config=FAST)
                except grpc.RpcError as e:
                    err = e
                    break
            assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
            assert "full" in err.details() or "quota" in err.details()
            assert voice in {v.id for v in a.voices()}          # alice's data is all still there
        finally:
            r.config_set("maxmemory", "64mb")
        for job in b.list_batches():
            b.delete_batch(job.id)
        a.delete_voice(voice)


# ---- 2. fair share of decoder capacity ------------------------------------------------------------------------------
class IdleStream:
    """Config and a piece that is not yet a sentence, then nothing: an LLM still thinking."""

    def __init__(self, client: TTSClient):
        self.release = threading.Event()

        def requests():
            yield tts_pb2.StreamingSynthesizeRequest(config=FAST)
            yield tts_pb2.StreamingSynthesizeRequest(text="我们今天")
            self.release.wait(60)

        self.call = client.stub.StreamingSynthesize(requests(), metadata=client.metadata, timeout=60)

    def close(self):
        self.call.cancel()
        self.release.set()


def decoder_streams(st) -> int:
    with grpc.insecure_channel(st.decoder.addr) as ch:
        info = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=10)
    return sum(e.active_streams for e in info.engines)


def test_idle_streams_hold_no_decoder_slot_and_a_tenant_has_a_share(st):
    with st.client("alice") as a, st.client("bob") as b:
        idle = [IdleStream(a) for _ in range(MAX_STREAMS)]
        try:
            # both are admitted (alice's share is full) ...
            wait_until(lambda: rpc_error_code(lambda: served(a)) == grpc.StatusCode.RESOURCE_EXHAUSTED, 30,
                       "alice's share to be taken by her idle streams", interval=0.1)
            # ... yet hold nothing in the decoder, and bob is served
            assert decoder_streams(st) == 0
            assert served(b)
        finally:
            for s in idle:
                s.close()
        wait_until(lambda: rpc_error_code(lambda: served(a)) is None, 30, "alice's share back", interval=0.1)


def rpc_error_code(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code()
    return None


# ---- 7. watch streams count against the stream limit --------------------------------------------------------------
def test_watch_streams_count_against_the_stream_limit(st):
    with st.client("alice") as a, st.client("bob") as b:
        job = a.submit_batch(jsonl=jsonl(150, "w"), config=FAST)
        watches = [a.watch_batch(job.id, timeout=120) for _ in range(MAX_STREAMS)]
        try:
            for w in watches:
                next(w)                             # each is open and has its first event
            err = rpc_error(lambda: next(a.watch_batch(job.id, timeout=30)))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "streams open" in err.details()
            assert served(b)
        finally:
            for w in watches:
                w.cancel()
            a.delete_batch(job.id)
        wait_until(lambda: rpc_error_code(lambda: served(a)) is None, 30, "alice's slots back", interval=0.1)


# ---- 4. per-tenant input folders ------------------------------------------------------------------------------------
def test_batch_input_folders_are_per_tenant_without_an_existence_oracle(st):
    (st.inputs / "alice" / "mine.jsonl").write_bytes(jsonl(1, "in"))
    (st.inputs / "alice" / "voice.wav").write_bytes(WAV)
    with st.client("alice") as a, st.client("bob") as b:
        assert follow(a, a.submit_batch(server_path="mine.jsonl", config=FAST).id).done == 1
        answers = set()
        for path in ("mine.jsonl", "../alice/mine.jsonl", "missing.jsonl", "../alice/missing.jsonl"):
            err = rpc_error(b.submit_batch, server_path=path, config=FAST)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            answers.add(err.details().replace(repr(path), "<path>"))
        assert len(answers) == 1, answers       # alice's existing files look exactly like missing ones
        line = json.dumps({"uttid": "clone", "syn_text": "你好", "prompt_speech": "../alice/voice.wav"})
        job = b.submit_batch(jsonl=line.encode(), config=FAST)
        final = follow(b, job.id)
        assert final.failed == 1 and "no readable file" in b.get_batch(job.id).errors[0].error
        for c in (a, b):
            for j in c.list_batches():
                c.delete_batch(j.id)


# ---- 5. the replace dictionary is shared by every frontend replica ----------------------------------------------
def test_a_dictionary_edit_reaches_every_frontend_replica(st):
    def reading(client):
        words = [w for s in client.analyze("我在银行工作") for w in s.words if w.text == "银行"]
        return " ".join(words[0].pinyin)

    with st.client("admin", 0) as g1, st.client("admin", 1) as g2, st.client("bob", 1) as b:
        assert reading(g1) == reading(g2) == "yin2 hang2"
        original = g1.stub.ReloadDictionary(tts_pb2.ReloadDictionaryRequest(), metadata=g1.metadata,
                                            timeout=30).content
        edited = original + '\n{"word": "银行", "pinyin": "yin2 xing2"}\n'
        try:
            g1.stub.ReloadDictionary(tts_pb2.ReloadDictionaryRequest(content=edited), metadata=g1.metadata,
                                     timeout=30)
            t0 = time.monotonic()
            wait_until(lambda: reading(g2) == "yin2 xing2", 10, "the edit on the other replica", interval=0.02)
            took = time.monotonic() - t0
            print(f"dictionary edit reached the other frontend replica in {took * 1000:.0f} ms")
            # from request to request, on both replicas: always the edited reading
            assert {reading(c) for c in (g1, g2, g1, g2)} == {"yin2 xing2"}
            assert served(b, "我在银行工作。")
        finally:
            g1.stub.ReloadDictionary(tts_pb2.ReloadDictionaryRequest(content=original), metadata=g1.metadata,
                                     timeout=30)
        wait_until(lambda: reading(g2) == "yin2 hang2", 10, "the restore on the other replica", interval=0.02)


# ---- 6. oversized messages ------------------------------------------------------------------------------------------
def test_oversized_messages_are_invalid_argument_before_any_work(st):
    with st.client("alice") as a, st.client("bob") as b:
        big = make_config(sample_rate=16000)
        big.reference_audio = b"\0" * (5 * 1024 * 1024)        # over the 4 MB message limit of this stack
        err = rpc_error(a.stub.Synthesize, tts_pb2.SynthesizeRequest(config=big, text="你好"),
                        metadata=a.metadata, timeout=60)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "the limit is" in err.details()
        # a unary answer that cannot fit the response limit is refused up front, not after synthesizing it
        t0 = time.monotonic()
        err = rpc_error(a.stub.Synthesize, tts_pb2.SynthesizeRequest(config=make_config(), text="你好" * 5000),
                        metadata=a.metadata, timeout=60)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "StreamingSynthesize" in err.details()
        assert decoder_streams(st) == 0 and time.monotonic() - t0 < 30
        assert served(b)


# ---- 3, 5, 8, 9: the web process ------------------------------------------------------------------------------------
def bearer(tenant: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


async def test_web_checks_size_and_token_before_reading(st):
    url = st.web.url
    async with aiohttp.ClientSession() as s:
        # a start frame over the limit is refused by the WebSocket layer, before any parse
        async with s.ws_connect(url + "/api/synthesize", max_msg_size=0) as ws:
            try:
                await ws.send_str(json.dumps({"type": "start", "text": "你好", "reference_audio_b64": "A" * (2 << 20)}))
            except ConnectionError:
                pass                            # closed by the server while the frame was still being written
            msg = await ws.receive(timeout=30)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                                aiohttp.WSMsgType.ERROR), msg
            assert ws.close_code in (1009, None), ws.close_code
        # announced reference audio is read only with a valid token
        async with s.ws_connect(url + "/api/synthesize") as ws:
            await ws.send_str(json.dumps({"type": "start", "text": "你好", "token": "wrong",
                                          "reference_audio_bytes": 8 << 20}))
            msg = json.loads((await ws.receive(timeout=30)).data)
            assert msg["type"] == "error" and msg["status"] == 401
        # a body over the limit: 413 from its Content-Length; a big one without a valid token: 401 before reading
        async with s.post(url + "/v1/audio/speech", data=b"{" + b" " * (2 << 20) + b"}", headers={
                "Content-Type": "application/json"}) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "INVALID_ARGUMENT"
        async with s.post(url + "/api/batches", data=jsonl(3000, "x"),
                          headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401 and "error" in await r.json()
    # the token is checked before the body is read: a client that announced 8 MB and sent 1 KB gets its 401 at once
    # (a server reading the body first would wait for the rest)
    status = await asyncio.to_thread(partial_post, st.web.port, "/api/batches", 8 << 20, "wrong")
    assert status == 401
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/livez") as r:
            assert r.status == 200
        # bob is served meanwhile
        async with s.post(url + "/v1/audio/speech", json={"input": "你好。"}, headers=bearer("bob")) as r:
            assert r.status == 200 and len(await r.read()) > 1000


def partial_post(port: int, path: str, length: int, token: str) -> int:
    """POST announcing ``length`` bytes, send 1 KB of them, return the status the server answers with."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Length: {length}\r\n\r\n").encode() + b"x" * 1024)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(1024)       # times out (the test fails) if the server waits for the whole body
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ")[1])


def stalled_websocket(port: int, start: dict) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that sends the start message and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall((f"GET /api/synthesize HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps(start).encode()
    mask = secrets.token_bytes(4)
    header = b"\x81" + (bytes([0x80 | 126]) + struct.pack(">H", len(payload)) if len(payload) < 65536
                        else bytes([0x80 | 127]) + struct.pack(">Q", len(payload)))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


def test_a_websocket_reader_that_stops_reading_releases_its_decoder_slot(st):
    text = "今天天气很好，我们一起去公园散步，然后去银行办事。" * 60        # minutes of audio
    sock = stalled_websocket(st.web.port, {"type": "start", "text": text, "token": TOKENS["alice"],
                                           "sample_rate": 16000})
    try:
        wait_until(lambda: decoder_streams(st) == 1, 60, "the synthesis to start", interval=0.1)
        # the client reads nothing: once its buffers are full the web process drops it after its send timeout
        # (2 s here), which cancels the synthesis long before the text's minutes of audio would be done
        wait_until(lambda: decoder_streams(st) == 0, 90, "the stalled reader's decoder stream to end", interval=0.2)
        with st.client("bob") as b:
            assert served(b)
    finally:
        sock.close()


async def test_web_refuses_cross_origin_and_non_json(st):
    url = st.web.url
    evil = {"Origin": "http://evil.example"}
    async with aiohttp.ClientSession() as s:
        for method, path in (("POST", "/api/cache/clear"), ("POST", "/api/batches"), ("PUT", "/api/dictionary"),
                             ("POST", "/v1/audio/speech")):
            async with s.request(method, url + path, headers={**evil, **bearer("admin")}, json={}) as r:
                assert r.status == 403, path
                assert "cross-origin" in (await r.json())["error"]["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            async with s.ws_connect(url + "/api/synthesize", headers=evil):
                pass
        assert err.value.status == 403
        async with s.post(url + "/v1/audio/speech", data=json.dumps({"input": "你好"}),
                          headers={"Content-Type": "text/plain", **bearer("alice")}) as r:
            assert r.status == 415
        async with s.request("POST", url + "/api/cache/clear", headers={"Host": "evil.example", **bearer("admin")}) as r:
            assert r.status == 403                  # DNS rebinding: not a Host of ours
        # the same origin works
        async with s.post(url + "/v1/audio/speech", json={"input": "你好。"},
                          headers={"Origin": url, **bearer("alice")}) as r:
            assert r.status == 200


async def test_web_results_are_bound_to_their_tenant(st):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(st.web.url + "/api/synthesize") as ws:
            await ws.send_str(json.dumps({"type": "start", "text": "你好。", "token": TOKENS["alice"],
                                          "sample_rate": 16000}))
            done = None
            async for m in ws:
                if m.type == aiohttp.WSMsgType.TEXT and json.loads(m.data)["type"] in ("done", "error"):
                    done = json.loads(m.data)
                    break
        assert done and done["type"] == "done", done
        async with s.get(st.web.url + done["result"]["url"], headers=bearer("bob")) as r:
            assert r.status == 404
        async with s.get(st.web.url + done["result"]["url"]) as r:
            assert r.status == 404                  # nor without a token
        async with s.get(st.web.url + done["result"]["url"], headers=bearer("alice")) as r:
            assert r.status == 200 and (await r.read())[:4] == b"RIFF"


@pytest.mark.parametrize("headers, body, status", [
    ({"Authorization": "Bearer tök-ü"}, {"input": "你好"}, 401),
    ({"X-Request-Id": "ünïcode"}, {"input": "你好"}, 400),
    ({}, "[" * 100000, 400),
    ({}, {"input": "你好", "sample_rate": 2**70}, 400),
    ({}, {"input": "你好", "speed": "fast"}, 400),
])
async def test_web_malformed_input_is_a_json_4xx(st, headers, body, status):
    data = body if isinstance(body, str) else json.dumps(body)
    async with aiohttp.ClientSession() as s:
        async with s.post(st.web.url + "/v1/audio/speech", data=data.encode(),
                          headers={"Content-Type": "application/json", **bearer("alice"), **headers}) as r:
            assert r.status == status, await r.text()
            err = (await r.json())["error"]
            assert err["message"] and "Traceback" not in err["message"]


async def test_web_errors_carry_no_server_address(st):
    dead = WebProc(f"127.0.0.1:{free_port()}", st.tmp).start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(dead.url + "/v1/audio/speech", json={"input": "你好"}) as r:
                assert r.status == 503
                message = (await r.json())["error"]["message"]
        assert "127.0.0.1" not in message and "ipv4" not in message, message
    finally:
        dead.stop()

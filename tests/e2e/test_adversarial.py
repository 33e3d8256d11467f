"""The adversarial review (issue 23), findings 3, 4, 7, 8 and 11, each tried against real processes: auth on with two
tenants (alice, bob), the durable store and the cache as two real redis-servers, the frontend, speaker, decoder and
gateway, and the web process in front of the gateway. Every test also checks that the other tenant is still served.

Clients that must look like other machines connect from other loopback addresses (127.0.0.2 …): raw sockets bind to
them, and a gRPC client goes through ``Relay``, a TCP relay that dials the gateway from such an address.
"""
from __future__ import annotations

import base64
import concurrent.futures
import io
import secrets
import select
import socket
import struct
import threading
import time
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
import soundfile as sf

from services.gateway.auth import hash_token
from tests.e2e.webstack import WebProc
from tests.procs import ROOT, RedisServer, make_stack, rpc_error, served, wait_until
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client import TTSClient
from tts_client.client import make_config
from tts_client.errors import from_rpc_error

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("alice", "bob")}
FAST = make_config(sample_rate=16000)
WAV = (ROOT / "tests" / "data" / "BAC009S0764W0121.wav").read_bytes()
INVALID = grpc.StatusCode.INVALID_ARGUMENT
MIB = 1024 * 1024

AUTH_PER_CLIENT, AUTH_PER_PREFIX, AUTH_WINDOW_S = 5, 8, 10.0
WS_START_TIMEOUT_S, PREAUTH_CONNECTIONS, PREAUTH_PER_CLIENT = 6.0, 64, 4


class AdversarialStack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.store = RedisServer(log_dir=tmp, policy="noeviction").start()
        self.stack = make_stack(
            tmp, TTS_GATEWAY_REDIS_URL=self.store.url,
            TTS_GATEWAY_TOKENS=",".join(f"{t}:{hash_token(tok)}" for t, tok in TOKENS.items()),
            TTS_GATEWAY_RATE_PER_TENANT=0, TTS_GATEWAY_AUTH_FAILURES_PER_CLIENT=AUTH_PER_CLIENT,
            TTS_GATEWAY_AUTH_FAILURES_PER_PREFIX=AUTH_PER_PREFIX, TTS_GATEWAY_AUTH_FAILURE_WINDOW_S=AUTH_WINDOW_S,
            TTS_GATEWAY_TRUSTED_PROXIES="127.0.0.1")          # the web process, which names its client
        self.gateway, self.speaker = self.stack.gateway, self.stack.speaker
        web = WebProc(self.gateway.addr, tmp)
        web.env.update({"TTS_WEB_WS_START_TIMEOUT_S": str(WS_START_TIMEOUT_S),
                        "TTS_WEB_PREAUTH_CONNECTIONS": str(PREAUTH_CONNECTIONS),
                        "TTS_WEB_PREAUTH_PER_CLIENT": str(PREAUTH_PER_CLIENT)})
        self.web = web.start()

    def client(self, tenant: str) -> TTSClient:
        return TTSClient(self.gateway.addr, token=TOKENS[tenant], timeout=120)

    def stop(self):
        self.web.stop()
        self.stack.stop()
        self.store.stop()


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    s = AdversarialStack(tmp_path_factory.mktemp("adversarial"))
    yield s
    s.stop()


def field_of(err: grpc.RpcError) -> str:
    return from_rpc_error(err).field


def trailers(err: grpc.RpcError) -> dict:
    return dict(err.trailing_metadata() or ())


# ---- process memory -------------------------------------------------------------------------------------------------
def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak since start or since ``reset_peak``) of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak(pid: int) -> float:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux clear_refs 5); returns that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory_mb(pid)["VmHWM"]


# ---- other client addresses -----------------------------------------------------------------------------------------
class Relay:
    """A TCP relay listening on 127.0.0.1 that dials ``port`` from ``source`` (another loopback address): whoever
    connects through it reaches the server as ``source``."""

    def __init__(self, source: str, port: int):
        self.source, self.target = source, port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.socket()
            up.bind((self.source, 0))
            up.connect(("127.0.0.1", self.target))
            self.socks += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket):
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def close(self):
        self.listener.close()
        for s in self.socks:
            s.close()


# =====================================================================================================================
# 3. compressed reference audio bombs: decoded in bounded blocks, stopped at the limit
# =====================================================================================================================
def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def encode_long(seconds: int, rate: int, channels: int, fmt: str, subtype: str) -> bytes:
    """``seconds`` of silence, written 10 s at a time (the encoder's own framing)."""
    buf = io.BytesIO()
    block = np.zeros((rate * 10, channels), np.float32)
    with sf.SoundFile(buf, "w", rate, channels, format=fmt, subtype=subtype) as f:
        for _ in range(seconds // 10):
            f.write(block)
    return buf.getvalue()


def repeat_packets(short: bytes, container: str, seconds: float) -> bytes:
    """A file of ``seconds`` made from a short encoded file of silence by repeating one of its packets (PyAV remux,
    no encoding): how an attacker makes an hour of Vorbis, Opus or MP3 in a second."""
    import av

    with av.open(io.BytesIO(short)) as src:
        stream = src.streams.audio[0]
        packets = [p for p in src.demux(stream) if p.size]
        out_buf = io.BytesIO()
        with av.open(out_buf, "w", format=container) as out:
            ost = out.add_stream_from_template(stream)
            pts, middle = 0, packets[len(packets) // 2]
            payload = bytes(middle)

            def mux(data: bytes, duration: int):
                nonlocal pts
                packet = av.Packet(data)
                packet.pts = packet.dts = pts
                packet.duration, packet.time_base, packet.stream = duration, stream.time_base, ost
                out.mux(packet)
                pts += duration

            for p in packets[:len(packets) // 2]:
                mux(bytes(p), p.duration)
            while pts * stream.time_base < seconds:
                mux(payload, middle.duration)
    return out_buf.getvalue()


def short_silence(fmt: str, subtype: str, rate: int, channels: int = 2) -> bytes:
    return encode(np.zeros((rate * 10, channels), np.float32), rate, fmt, subtype)


def wav_around_mp3(mp3: bytes, rate: int, channels: int) -> bytes:
    """A WAV file whose data is MPEG Layer III (format tag 0x0055, MPEGLAYER3WAVEFORMAT), as libsndfile reads it."""
    fmt = (struct.pack("<HHIIHHH", 0x0055, channels, rate, 1000, 1, 0, 12)
           + struct.pack("<HIHHH", 1, 2, 24, 1, 0))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(mp3)) + mp3
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture(scope="module")
def bombs() -> dict[str, tuple[bytes, float]]:
    """name → (file, what it decodes to in MB as float32, all channels): each far more than the speaker should hold."""
    mp3 = repeat_packets(short_silence("MP3", "MPEG_LAYER_III", 24000), "mp3", 3600)
    out = {
        "wav_mpeg3_1h_24k_stereo": wav_around_mp3(mp3, 24000, 2),
        "flac_1h_48k_stereo": encode_long(3600, 48000, 2, "FLAC", "PCM_16"),
        "ogg_vorbis_1h_48k_stereo": repeat_packets(short_silence("OGG", "VORBIS", 48000), "ogg", 3600),
        "ogg_opus_1h_48k_stereo": repeat_packets(short_silence("OGG", "OPUS", 48000), "ogg", 3600),
        "mp3_1h_24k_stereo": mp3,
        # under the 120 s limit, over the decoded-bytes limit: 110 s × 655.35 kHz (FLAC's highest rate) × 4 B = 275 MB,
        # all of it kept (one channel) and resampled if decoded whole: +645 MB
        "flac_110s_655khz_mono": encode_long(110, 655350, 1, "FLAC", "PCM_16"),
    }
    sizes = {}
    for name, data in out.items():
        info = sf.info(io.BytesIO(data))
        assert len(data) < 10 * MIB, (name, len(data))              # every one is an acceptable upload
        sizes[name] = (data, info.frames * info.channels * 4 / MIB)
    return sizes


BOMBS = ["wav_mpeg3_1h_24k_stereo", "flac_1h_48k_stereo", "ogg_vorbis_1h_48k_stereo", "ogg_opus_1h_48k_stereo",
         "mp3_1h_24k_stereo", "flac_110s_655khz_mono"]
# what decoding one file may add to the speaker's peak RSS: the kept mono (≤ 64 MB decoded / channels), a 1 MB
# block, the resampled copies; before the fix each of these added 0.6-2.8 GB
SPEAKER_PEAK_GROWTH_MB = 200


@pytest.fixture(scope="module")
def speaker_baseline(st) -> float:
    """The speaker's RSS once it has served a voice (its model warm): every bomb is measured against it, so memory a
    bomb leaves behind counts too (the code before kept gigabytes after a bomb)."""
    with st.client("bob") as bob:
        bob.delete_voice(bob.register_voice("warm", WAV).voice.id)
        assert served(bob)
    return memory_mb(st.speaker.proc.pid)["VmRSS"]


@pytest.mark.parametrize("name", BOMBS)
def test_a_compressed_audio_bomb_is_refused_with_bounded_memory(st, bombs, speaker_baseline, name):
    data, decoded_mb = bombs[name]
    assert decoded_mb > SPEAKER_PEAK_GROWTH_MB                # decoded whole, it would blow the bound
    pid = st.speaker.proc.pid
    with st.client("alice") as alice, st.client("bob") as bob:
        before = reset_peak(pid)
        err = rpc_error(alice.register_voice, "bomb", data)
        peak = memory_mb(pid)["VmHWM"] - speaker_baseline
        print(f"{name}: {len(data) / 1024:.0f} KB → {decoded_mb:.0f} MB decoded; speaker peak +{peak:.0f} MB over "
              f"its baseline (+{memory_mb(pid)['VmHWM'] - before:.0f} MB in this call); {err.details()}")
        assert peak < SPEAKER_PEAK_GROWTH_MB, f"speaker peak RSS grew {peak:.0f} MB"
        assert err.code() == INVALID and field_of(err) == "audio", err.details()
        if name == "flac_110s_655khz_mono":
            assert f"more than {64 * MIB} bytes of samples (the limit" in err.details()
        else:
            assert "is longer than 120 s (the limit" in err.details()
        voice = bob.register_voice("bobs", WAV).voice.id            # the other tenant is served meanwhile
        bob.delete_voice(voice)
        assert served(bob)


def test_audio_bombs_inline_and_at_once_stay_bounded(st, bombs, speaker_baseline):
    """Inline reference audio is decoded the same way (the field is config.reference_audio); four bombs at once
    (two tenants) hold no more than the decode gate lets in, and what they leave does not pile up."""
    pid = st.speaker.proc.pid
    names = ["flac_1h_48k_stereo", "ogg_opus_1h_48k_stereo", "mp3_1h_24k_stereo", "ogg_vorbis_1h_48k_stereo"]
    with st.client("alice") as alice, st.client("bob") as bob:
        reset_peak(pid)
        before = speaker_baseline
        err = rpc_error(alice.stream, ["你好。"], make_config(reference_audio=bombs["flac_1h_48k_stereo"][0]))
        assert err.code() == INVALID and field_of(err) == "config.reference_audio", err.details()
        assert "is longer than 120 s" in err.details()

        def attack(i: int) -> grpc.RpcError:
            client = (alice, bob)[i % 2]
            return rpc_error(client.register_voice, f"bomb{i}", bombs[names[i]][0])

        errors = []
        for _ in range(3):                      # 3 rounds of 4 at once: what a refused bomb leaves must not pile up
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                errors += pool.map(attack, range(4))
        peak = memory_mb(pid)["VmHWM"] - before
        kept = memory_mb(pid)["VmRSS"] - before
        print(f"inline + 3 × 4 at once: speaker peak +{peak:.0f} MB over its baseline ({before:.0f} MB), "
              f"+{kept:.0f} MB kept after")
        assert all(e.code() == INVALID and field_of(e) == "audio" for e in errors), [e.details() for e in errors]
        assert peak < 2 * SPEAKER_PEAK_GROWTH_MB, f"speaker peak RSS grew {peak:.0f} MB"
        # the code before kept each refused request's frames (its bytes, decoded blocks) in a reference cycle until
        # the cyclic GC ran: +30 MB a bomb (the review saw 3 GB kept after its unbounded decodes)
        assert kept < 100, f"the speaker kept {kept:.0f} MB after the bombs"
        assert served(bob) and served(alice)


# =====================================================================================================================
# 7. oversized messages: INVALID_ARGUMENT naming the limit at every size the transport reads
# =====================================================================================================================
def raw_call(addr: str, method: str, *messages: bytes, unary: bool = False, token: str = ""):
    md = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", -1)]) as ch:
        if unary:
            return ch.unary_unary(f"/tts.v1.TextToSpeech/{method}", request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)(messages[0], metadata=md, timeout=120)
        return list(ch.stream_stream(f"/tts.v1.TextToSpeech/{method}", request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)(iter(messages), metadata=md, timeout=120))


@pytest.mark.parametrize("mb", [17, 20, 33, 40, 63])
def test_an_oversized_message_is_invalid_argument_at_every_size(st, mb):
    limit = 16 * MIB                                    # TTS_GATEWAY_MAX_MESSAGE_MB, the default
    size = mb * MIB
    config = tts_pb2.StreamingSynthesizeRequest(config=FAST).SerializeToString()
    text = tts_pb2.StreamingSynthesizeRequest(text="x" * (size - 6)).SerializeToString()
    unary = tts_pb2.SynthesizeRequest(config=FAST, text="x" * (size - 16)).SerializeToString()
    voice = tts_pb2.RegisterVoiceRequest(name="big", audio=b"\0" * (size - 16)).SerializeToString()
    pid = st.gateway.proc.pid
    before = reset_peak(pid)
    for method, messages, is_unary in (("StreamingSynthesize", (config, text), False),
                                       ("Synthesize", (unary,), True), ("RegisterVoice", (voice,), True)):
        err = rpc_error(raw_call, st.gateway.addr, method, *messages, unary=is_unary, token=TOKENS["alice"])
        assert err.code() == INVALID, (method, mb, err.code(), err.details())
        assert f"the limit is {limit} (TTS_GATEWAY_MAX_MESSAGE_MB)" in err.details(), err.details()
        assert field_of(err) == "request"
        assert "retry-after-ms" not in trailers(err)             # nothing to retry
    peak = memory_mb(pid)["VmHWM"] - before
    print(f"{mb} MB messages: gateway peak +{peak:.0f} MB")
    assert peak < 4 * 64 + 64                                  # ≤ the transport's hard cap, a few copies
    with st.client("bob") as bob:
        assert served(bob)


def test_a_message_over_the_transport_cap_is_read_no_further(st):
    """Over the hard cap (64 MiB) gRPC refuses the message from its length prefix, before reading it: the gateway's
    memory does not move. Its status is gRPC's own (RESOURCE_EXHAUSTED, no RetryInfo); the client package reports
    it as what it is, a request too big (INVALID_ARGUMENT naming the request), as it does under the cap."""
    pid = st.gateway.proc.pid
    before = reset_peak(pid)
    config = tts_pb2.StreamingSynthesizeRequest(config=FAST).SerializeToString()
    text = tts_pb2.StreamingSynthesizeRequest(text="x" * (80 * MIB)).SerializeToString()
    err = rpc_error(raw_call, st.gateway.addr, "StreamingSynthesize", config, text, token=TOKENS["alice"])
    assert memory_mb(pid)["VmHWM"] - before < 32
    assert "retry-after-ms" not in trailers(err)
    mapped = from_rpc_error(err)
    assert mapped.code == "INVALID_ARGUMENT" and mapped.field == "request" and mapped.retry_after_s is None
    assert f"the message is {len(text)} bytes" in mapped.message, mapped.message
    with st.client("bob") as bob:
        assert served(bob)


# =====================================================================================================================
# 8. phoneme-mode markup too long for the status trailers; every status detail capped
# =====================================================================================================================
MARKUP = {
    "repeated_readings_x500": ("我" + "[zhuang1]" * 500, "a second reading at position 10 for the same character"),
    "repeated_readings_x1200": ("我" + "[zhuang1]" * 1200, "a second reading at position 10 for the same character"),
    "one_long_reading_x500": ("我[" + "zhuang1" * 500 + "]", "the reading at position 1 is longer than 12 characters"),
    "one_long_reading_x1200": ("我[" + "zhuang1" * 1200 + "]",
                               "the reading at position 1 is longer than 12 characters"),
}


@pytest.mark.parametrize("name", sorted(MARKUP))
def test_inline_readings_are_bounded_and_their_errors_are_short(st, name):
    text, reason = MARKUP[name]
    with st.client("alice") as alice, st.client("bob") as bob:
        for how, call in (("AnalyzeText", lambda: alice.analyze(text, phoneme_mode=True)),
                          ("StreamingSynthesize", lambda: alice.stream([text], make_config(phoneme_mode=True)))):
            err = rpc_error(call)
            assert err.code() == INVALID, (how, err.code(), err.details())
            assert err.details() == f"text: {reason}", (how, err.details())
            assert field_of(err) == "text"
        assert bob.analyze("我[wo3]们", phoneme_mode=True)[0].words            # a good reading still works
        assert served(bob)


def test_every_status_message_is_capped_below_the_metadata_limit(st):
    """An error that echoes a long request field (here the gateway's own check of AnalyzeText.language) is cut by the
    status mapping, so its trailers fit: the caller gets the INVALID_ARGUMENT itself, not a transport error."""
    with st.client("alice") as alice, st.client("bob") as bob:
        for language in ("x" * 9000, "语" * 3000):
            err = rpc_error(alice.analyze, "你好", language=language)
            assert err.code() == INVALID, (err.code(), err.details())
            assert err.details().startswith("language: unknown language") and err.details().endswith("… (cut)")
            assert len(err.details().encode()) <= 512 and field_of(err) == "language"
        assert served(bob)


# =====================================================================================================================
# 11. failed authentication is throttled per client address and per token prefix
# =====================================================================================================================
def analyze_via(channel: grpc.Channel, token: str):
    return tts_pb2_grpc.TextToSpeechStub(channel).AnalyzeText(
        tts_pb2.AnalyzeTextRequest(text="好"), metadata=(("authorization", f"Bearer {token}"),), timeout=60)


def retry_after(err: grpc.RpcError) -> float:
    return from_rpc_error(err).retry_after_s


def test_a_burst_of_bad_tokens_is_throttled_per_client(st):
    relay = Relay("127.0.0.2", st.gateway.port)
    try:
        with relay.channel() as ch, st.client("bob") as bob:
            for _ in range(AUTH_PER_CLIENT):
                err = rpc_error(analyze_via, ch, "guess-" + secrets.token_hex(8))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
            # over the limit: this client is refused whatever it brings (alice's valid token too), with a delay
            refused_at = time.monotonic()
            for token in ("guess-" + secrets.token_hex(8), TOKENS["alice"]):
                err = rpc_error(analyze_via, ch, token)
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
                assert "TTS_GATEWAY_AUTH_FAILURES_PER_CLIENT" in err.details() and "127.0.0" not in err.details()
                assert 0 < retry_after(err) <= AUTH_WINDOW_S
            wait = retry_after(err)
            # a refusal is held (TTS_GATEWAY_AUTH_THROTTLE_HOLD_S, 1 s): back to back, this client makes ~1 call a second
            assert time.monotonic() - refused_at >= 2 * 1.0 - 0.1
            # bob, from another address, is served meanwhile; so is alice from hers
            assert served(bob) and bob.analyze("好")
            with st.client("alice") as alice:
                assert alice.analyze("好")
            # after the window the client authenticates again (refused calls did not extend it)
            wait_until(lambda: rpc_code(analyze_via, ch, TOKENS["alice"]) is None, AUTH_WINDOW_S + 30,
                       "the throttled client to be let in again", interval=0.2)
            assert time.monotonic() - refused_at >= wait - 0.5
    finally:
        relay.close()


def rpc_code(fn, *args):
    try:
        fn(*args)
    except grpc.RpcError as e:
        return e.code()
    return None


def test_guesses_spread_over_addresses_are_throttled_per_token_prefix_not_the_tenant(st):
    """Guesses sharing a prefix from several addresses (each under its own limit) block that prefix; alice, whose
    token has the same prefix as other guesses and has authenticated, is not locked out."""
    relays = {n: Relay(f"127.0.0.{n}", st.gateway.port) for n in range(3, 9)}
    channels = {n: r.channel() for n, r in relays.items()}
    try:
        for i in range(AUTH_PER_PREFIX):                    # 8 failures from 2 addresses: 4 each, under 5
            err = rpc_error(analyze_via, channels[3 + i % 2], "guessing" + secrets.token_hex(8))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        err = rpc_error(analyze_via, channels[5], "guessing" + secrets.token_hex(8))    # a third address
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "PER_PREFIX" in err.details(), err.details()
        assert 0 < retry_after(err) <= AUTH_WINDOW_S
        assert rpc_code(analyze_via, channels[5], TOKENS["bob"]) is None       # that address is not blocked

        with st.client("alice") as alice:
            assert alice.analyze("好")                     # alice's prefix is a known good one from now on
        alice_prefix = TOKENS["alice"][:8]                 # "tok-alic": TTS_GATEWAY_AUTH_PREFIX_CHARS = 8
        codes = [rpc_code(analyze_via, channels[6 + i % 3], alice_prefix + secrets.token_hex(8))
                 for i in range(AUTH_PER_PREFIX + 1)]      # 9 failures with her prefix from 3 addresses: 3 each
        assert rpc_code(analyze_via, channels[5], TOKENS["alice"]) is None      # alice is not locked out
        assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}                 # (each address under its limit)
        with st.client("bob") as bob:
            assert served(bob)
    finally:
        for ch in channels.values():
            ch.close()
        for r in relays.values():
            r.close()


async def test_the_web_forwards_its_clients_address_to_the_throttle(st):
    """Bad tokens through the web from one address throttle that address (429 + Retry-After), not the web process
    itself: a caller of the web from another address is served, and so is bob on the gateway."""
    url = st.web.url + "/api/voices"
    attacker = aiohttp.TCPConnector(local_addr=("127.0.2.1", 0))
    user = aiohttp.TCPConnector(local_addr=("127.0.2.2", 0))
    async with aiohttp.ClientSession(connector=attacker) as a, aiohttp.ClientSession(connector=user) as u:
        for _ in range(AUTH_PER_CLIENT):
            async with a.get(url, headers={"Authorization": "Bearer " + secrets.token_hex(8)}) as r:
                assert r.status == 401, await r.text()
        async with a.get(url, headers={"Authorization": f"Bearer {TOKENS['alice']}"}) as r:
            assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= AUTH_WINDOW_S + 1
            assert (await r.json())["error"]["code"] == "RESOURCE_EXHAUSTED"
        async with u.get(url, headers={"Authorization": f"Bearer {TOKENS['alice']}"}) as r:
            assert r.status == 200 and (await r.json())["voices"]
    with st.client("bob") as bob:
        assert served(bob)


# =====================================================================================================================
# 4. pre-auth WebSockets stalled part-way through a big start frame
# =====================================================================================================================
def stalled_upgrade(port: int, source: str, frame_kb: int = 1000, sent_kb: int = 990):
    """A WebSocket upgrade from ``source`` that announces a ``frame_kb`` start frame and stops after ``sent_kb`` of
    it. Returns (socket, status line)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall((f"GET /api/synthesize HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode()
    if status.startswith("HTTP/1.1 101"):
        mask = secrets.token_bytes(4)                    # the payload (zeros, masked) is never completed
        sock.sendall(b"\x81" + bytes([0x80 | 127]) + struct.pack(">Q", frame_kb * 1024) + mask
                     + (mask * (sent_kb * 256)))
    return sock, status


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (or reset) the connection; never blocks."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(1 << 16):
                return True
        return False
    except OSError:
        return True


async def synthesize_over_ws(session: aiohttp.ClientSession, url: str, headers: dict, start: dict) -> dict:
    async with session.ws_connect(url + "/api/synthesize", headers=headers) as ws:
        await ws.send_json(start)
        async for m in ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                msg = __import__("json").loads(m.data)
                if msg["type"] in ("done", "error"):
                    return msg
    return {"type": "closed"}


async def test_pre_auth_websockets_stalled_mid_frame_are_bounded_and_dropped(st):
    import asyncio

    pid, port = st.web.proc.pid, st.web.port
    start = {"type": "start", "text": "你好。", "sample_rate": 16000}
    auth = {"Authorization": f"Bearer {TOKENS['alice']}"}
    async with aiohttp.ClientSession() as s:                # warm: what a synthesis through the web leaves behind
        assert (await synthesize_over_ws(s, st.web.url, auth, start))["type"] == "done"
    baseline = reset_peak(pid)

    stop, opened, accepted, statuses = threading.Event(), [], [], []

    def attack():
        """300 stalled start frames from 20 addresses; then, until told to stop, a new one each time the server has
        dropped one of the accepted (the attack keeps every slot it can)."""
        n = 0
        while not stop.is_set() and n < 1000:
            if n >= 300:
                wait_until(lambda: stop.is_set() or sum(not closed_by_server(s) for s, _ in accepted)
                           < PREAUTH_CONNECTIONS, 120, "the server to drop a stalled connection", interval=0.05)
                if stop.is_set():
                    return
            sock, status = stalled_upgrade(port, f"127.0.1.{n % 20 + 1}")
            n += 1
            opened.append(sock)
            statuses.append(status)
            if status.startswith("HTTP/1.1 101"):
                accepted.append((sock, time.monotonic()))
            else:
                sock.close()

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(opened) >= 300, 120, "300 stalled connections")
        # the slots are full: a new unauthenticated upgrade is refused with a retry delay ...
        async with aiohttp.ClientSession() as s:
            async with s.get(st.web.url + "/api/synthesize", headers={
                    "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": base64.b64encode(secrets.token_bytes(16)).decode()}) as r:
                assert r.status == 429 and int(r.headers["Retry-After"]) >= 1, r.status
            # ... while a caller with a token on the upgrade is served during the attack
            t0 = time.monotonic()
            done = await synthesize_over_ws(s, st.web.url, auth, start)
            assert done["type"] == "done" and done["summary"]["audio_ms"] > 0, done
            print(f"authenticated caller served in {time.monotonic() - t0:.1f} s during the attack")
        during = memory_mb(pid)
    finally:
        stop.set()
        thread.join(60)
    assert all(x.startswith(("HTTP/1.1 101", "HTTP/1.1 429")) for x in statuses), set(statuses)
    peak = memory_mb(pid)["VmHWM"] - baseline
    # each stalled connection is dropped within the start timeout (plus scheduling slack on busy cores)
    deadline = max(t for _, t in accepted) + WS_START_TIMEOUT_S + 15
    wait_until(lambda: all(closed_by_server(s) for s, _ in accepted) or time.monotonic() > deadline, 120,
               "the stalled connections to be dropped", interval=0.1)
    late = [s for s, _ in accepted if not closed_by_server(s)]
    for sock in opened:
        sock.close()
    # memory goes back once they are gone (glibc kept ~60 MB of these 64 frames' buffers before)
    wait_until(lambda: memory_mb(pid)["VmRSS"] - baseline < 20, 30, "the web's RSS back near its baseline", 0.2)
    after = memory_mb(pid)["VmRSS"]
    print(f"{len(opened)} stalled upgrades ({len(accepted)} accepted, the rest 429): web RSS {baseline:.0f} MB → "
          f"peak +{peak:.0f} MB (during {during['VmRSS']:.0f}) → {after:.0f} MB after")
    assert not late, f"{len(late)} stalled connections outlived the start timeout"
    # each accepted connection buffers at most its start frame (1000 KB here); 300 of them took +296 MB before
    assert peak < PREAUTH_CONNECTIONS * 1000 / 1024 + 30, f"web peak RSS grew {peak:.0f} MB"
    with st.client("bob") as bob:
        assert served(bob)

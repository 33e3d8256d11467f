"""Faults with real processes, started and killed by these tests.

A stack of our own for the tests that kill the gateway or a decoder: two decoder processes (output queue of 2 chunks)
and a gateway whose TTS_GATEWAY_DECODER_ADDRS lists a decoder that is down, then the two; it shares the session
stack's frontend, speaker and redis. The speaker, redis and client-side faults use the session stack itself
(stages are restarted on their own port, as in test_stage_faults.py). Synchronisation is by events, counters and
status polls with a deadline (wait_until), never by sleeping.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from services.decoder.engine.fastspeech2.settings import FastSpeech2Settings
from tests.procs import RedisServer, free_port, make_stack, wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client.client import make_config

REF = (Path(__file__).resolve().parents[1] / "data" / "BAC009S0764W0121.wav").read_bytes()
LONG = "".join(f"这是第{i}句话，我们正在测试语音合成服务。" for i in range(1, 9))      # ~16 segments, ~25 s of audio
QUEUE_CHUNKS = 2
# the largest chunk of the default engine (fastspeech2): its schedule's longest, + a folded tail under a third, float32
_LONGEST = max(FastSpeech2Settings().chunk_schedule)
CHUNK_BYTES = (_LONGEST + _LONGEST // 3) * 300 * 4
# a client that does not let gRPC read ahead much for it (default: windows grow to ~4 MB)
SLOW_CLIENT_OPTS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 64 * 1024)]


def info(addr: str, engine: str = ""):
    """The decoder's EngineInfo of ``engine`` ("" = its first engine, the default)."""
    with grpc.insecure_channel(addr) as ch:
        engines = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=5).engines
    return next(e for e in engines if e.name == engine) if engine else engines[0]


class Streamer(threading.Thread):
    """One StreamingSynthesize call in a thread: sends config + ``first``; after ``release`` is set, sends ``rest``
    and half-closes (never, if ``rest`` is None). Records chunks, the summary, and the error with its time."""

    def __init__(self, stub, first: str, rest: str | None = "好。", timeout: float = 300, metadata: tuple = ()):
        super().__init__(daemon=True)
        self.stub, self.first, self.rest, self.timeout, self.metadata = stub, first, rest, timeout, metadata
        self.release, self.first_chunk, self.done = threading.Event(), threading.Event(), threading.Event()
        self.chunks: list = []
        self.chunk_times: list[float] = []
        self.summary = None
        self.error: grpc.RpcError | None = None
        self.error_at: float | None = None
        self.call = None

    def requests(self):
        yield tts_pb2.StreamingSynthesizeRequest(config=make_config())
        yield tts_pb2.StreamingSynthesizeRequest(text=self.first)
        self.release.wait(self.timeout)
        if self.rest is None:
            self.done.wait(self.timeout)        # hold the stream open until the call ends
            return
        yield tts_pb2.StreamingSynthesizeRequest(text=self.rest)

    def run(self):
        try:
            self.call = self.stub.StreamingSynthesize(self.requests(), timeout=self.timeout,
                                                      metadata=self.metadata or None)
            for resp in self.call:
                if resp.WhichOneof("response") == "audio":
                    self.chunks.append(resp.audio)
                    self.chunk_times.append(time.monotonic())
                    self.first_chunk.set()
                else:
                    self.summary = resp.summary
        except grpc.RpcError as err:
            self.error, self.error_at = err, time.monotonic()
        finally:
            self.done.set()
            self.release.set()

    def finish(self, timeout: float = 120):
        self.release.set()
        self.join(timeout)
        assert not self.is_alive(), "stream did not end"
        return self


# ---- a stack of our own: two decoders and a gateway --------------------------------------------------------------
class FaultStack:
    def __init__(self, stack):
        self.tmp = stack.tmp
        # a decoder that is down from the start, listed second: the gateway's one Info lookup (engine segment units,
        # cached) takes the round-robin's first pick, so the first stream's Decode goes to the down one
        self.down = f"127.0.0.1:{free_port()}"
        self.own = make_stack(stack.tmp, base=stack, start=("decoder", "gateway"), decoders=2,
                              decoder_addrs=lambda addrs: [addrs[0], self.down, addrs[1]],
                              TTS_DECODER_FASTSPEECH2_QUEUE_CHUNKS=QUEUE_CHUNKS, TTS_GATEWAY_GRACE_SECONDS=10,
                              TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=60)
        self.decoders, self.gateway = self.own.decoders, self.own.gateway
        self.channel = grpc.insecure_channel(self.gateway.addr, options=SLOW_CLIENT_OPTS)
        self.stub = tts_pb2_grpc.TextToSpeechStub(self.channel)

    def synth(self, text: str = "好", timeout: float = 120) -> list:
        return list(self.stub.StreamingSynthesize(iter([tts_pb2.StreamingSynthesizeRequest(config=make_config()),
                                                        tts_pb2.StreamingSynthesizeRequest(text=text)]),
                                                  timeout=timeout))

    def live_decoders(self):
        return [d for d in self.decoders if d.alive()]

    def idle(self) -> bool:
        infos = [info(d.addr) for d in self.live_decoders()]
        return all(i.active_streams == 0 and i.buffered_bytes == 0 for i in infos)

    def stop(self):
        self.channel.close()
        self.own.stop()


@pytest.fixture(scope="module")
def fs(stack):
    s = FaultStack(stack)
    yield s
    s.stop()


def test_a_request_sent_to_a_down_decoder_is_retried_on_another(fs):
    # the second decoder in the gateway's list has never been up: round-robin sends the first stream there
    first = fs.synth()
    assert first[-1].summary.audio_ms > 200
    assert "retrying on another decoder" in fs.gateway.log()
    for _ in range(4):                                    # every later stream is served too, whichever is picked
        assert fs.synth()[-1].summary.audio_ms > 200


def test_a_slow_reader_stops_the_decoder_at_its_queue_bound(fs):
    """The client reads nothing: the decoder's output queue fills and synthesis waits there (it does not run ahead
    through the whole text). Signal: the decoder's Info (stalled_streams, buffered_bytes), not the clock."""
    wait_until(fs.idle, 30, "decoders idle")
    end = threading.Event()

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=make_config())
        yield tts_pb2.StreamingSynthesizeRequest(text=LONG)
        end.wait(300)

    call = fs.stub.StreamingSynthesize(requests(), timeout=300)
    try:
        next(call)                                        # it has started; from now on the client reads nothing

        def stalled():
            infos = [i for i in (info(d.addr) for d in fs.live_decoders()) if i.stalled_streams]
            return infos[0] if infos else None

        at_stall = wait_until(stalled, 120, "the decoder to block on its full output queue", interval=0.1)
        assert at_stall.stalled_streams == 1 and at_stall.active_streams == 1
        assert 0 < at_stall.buffered_bytes <= QUEUE_CHUNKS * CHUNK_BYTES
        # for a while: a whole other synthesis runs through the same gateway and connection (its reads refresh the
        # connection's flow-control window, so a little more of the slow stream may move); the slow stream parks
        # again at the same bound instead of running ahead through the text
        assert fs.synth()[-1].summary.audio_ms > 200
        later = wait_until(stalled, 60, "the slow stream to park again", interval=0.1)
        assert later.active_streams == 1 and later.buffered_bytes <= QUEUE_CHUNKS * CHUNK_BYTES
    finally:
        call.cancel()
        end.set()
    wait_until(fs.idle, 30, "the cancelled stream's state to be freed on the decoder")


def test_a_decoder_killed_mid_stream(fs):
    wait_until(fs.idle, 30, "decoders idle")
    streams, placed = [], {}

    def placement():
        return {d.addr: info(d.addr).active_streams for d in fs.live_decoders()}

    try:
        # open streams (each held open mid-utterance) until both decoders serve one
        while len(placed) < 2:
            assert len(streams) < 6, f"round-robin never reached both decoders: {placement()}"
            before = placement()
            s = Streamer(fs.stub, "你好，这是第一句话。", rest="这是最后一句话。")
            s.start()
            streams.append(s)
            wait_until(lambda: s.first_chunk.is_set() or s.done.is_set(), 120, "first audio")
            assert s.error is None, s.error
            now = placement()
            addr = next(a for a in now if now[a] > before.get(a, 0))
            placed.setdefault(addr, s)
        victim_addr, other_addr = list(placed)
        victim = next(d for d in fs.decoders if d.addr == victim_addr)
        a, b = placed[victim_addr], placed[other_addr]

        killed_at = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        a.done.wait(30)
        assert a.error is not None and a.error.code() == grpc.StatusCode.UNAVAILABLE
        assert a.error.details().startswith("decoder unavailable"), a.error.details()
        assert a.error_at - killed_at < 1.0, f"UNAVAILABLE after {a.error_at - killed_at:.2f} s"

        b.finish()                                        # the other decoder's stream goes on to its end
        assert b.error is None, b.error
        assert b.summary is not None and b.chunks[-1].segment_text == "这是最后一句话。"
        assert any(t > killed_at for t in b.chunk_times)
        assert fs.gateway.health() == "SERVING"
        for _ in range(4):                                # new streams: the dead decoder is skipped or retried
            assert fs.synth()[-1].summary.audio_ms > 200
    finally:
        for s in streams:
            s.release.set()
            if s.call is not None and s.is_alive():
                s.call.cancel()
        victim = [d for d in fs.decoders if not d.alive()]
        for d in victim:
            d.stop()


def test_sigterm_under_load_drains_in_flight_streams_and_refuses_new_ones(fs):
    streams = [Streamer(fs.stub, "你好，这是第一句话。", rest="这是最后一句话。") for _ in range(2)]
    for s in streams:
        s.start()
    for s in streams:
        wait_until(lambda: s.first_chunk.is_set() or s.done.is_set(), 120, "first audio")
        assert s.error is None, s.error
    t0 = time.monotonic()
    fs.gateway.proc.send_signal(signal.SIGTERM)

    wait_until(lambda: fs.gateway.health() == "DOWN", 10, "the gateway to refuse new calls (health RPC refused)")
    with pytest.raises(grpc.RpcError) as err:
        fs.synth()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    for s in streams:                                     # the in-flight streams send their last text and finish
        s.finish()
        assert s.error is None, s.error
        assert s.summary is not None and s.chunks[-1].segment_text == "这是最后一句话。"
    rc = fs.gateway.proc.wait(15)
    assert rc == 0 and time.monotonic() - t0 < 10 + 3, f"exit {rc} after {time.monotonic() - t0:.1f} s"


# ---- the session stack: speaker and redis faults, clients that go away ----------------------------------------
def test_speaker_down_then_back(stack, client):
    stack.speaker.kill()
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.register_voice("x", REF)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details().startswith("speaker unavailable"), err.value.details()
        assert client.stream(["好"], make_config()).summary.audio_ms > 200       # built-in voices need no speaker
    finally:
        stack.speaker = stack.speaker.again()

    def registered():
        try:
            client.delete_voice(client.register_voice("back", REF).voice.id)
            return True
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e.details()
            return False

    wait_until(registered, 15, "the gateway to reach the restarted speaker", interval=0.2)


def test_redis_killed_during_load_fails_no_synthesis(stack):
    stop, lock = threading.Event(), threading.Lock()
    ok, failed = [0, 0, 0], []

    def worker(k):
        with stack.client() as c:
            while not stop.is_set():
                try:
                    assert c.stream(["好"], make_config()).summary.audio_ms > 200
                    with lock:
                        ok[k] += 1
                except grpc.RpcError as err:
                    failed.append(f"{err.code().name}: {err.details()}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: min(ok) >= 1, 120, "every worker to finish a synthesis")
        stack.redis.kill()
        at_kill = list(ok)
        with stack.client() as c:
            # the built-in voices are still listed, with a word that the registered ones are missing
            resp = c.list_voices()
            assert resp.voices and all(v.builtin for v in resp.voices)
            assert resp.registered_voices_error.startswith("registered voices are not listed: redis unavailable")
            with pytest.raises(grpc.RpcError) as err:
                c.register_voice("x", REF)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and err.value.details().startswith("redis")
            wait_until(lambda: all(n >= k + 2 for n, k in zip(ok, at_kill)), 120,
                       "two more syntheses per worker while redis is down")
            stack.redis = RedisServer(port=stack.redis.port, log_dir=stack.tmp).start()

            def recovered():
                try:
                    if c.list_voices().registered_voices_error:
                        return False
                    c.delete_voice(c.register_voice("after", REF).voice.id)
                    return True
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, e.details()
                    return False

            wait_until(recovered, 15, "voices to work again once redis is back", interval=0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert failed == []


def test_a_client_that_goes_away_frees_the_decoder_stream(stack, client):
    s = Streamer(client.stub, "你好，这是第一句话，后面还有很多。", rest=None)
    s.start()
    wait_until(lambda: s.first_chunk.is_set() or s.done.is_set(), 120, "first audio")
    assert info(stack.decoder.addr).active_streams >= 1
    s.call.cancel()
    s.finish(30)
    assert s.error is not None and s.error.code() == grpc.StatusCode.CANCELLED
    wait_until(lambda: info(stack.decoder.addr).active_streams == 0, 15, "the decoder stream to be closed")
    assert client.stream(["好"], make_config()).summary.audio_ms > 200


def test_deadline_exceeded_ends_the_stream_everywhere(stack, client):
    s = Streamer(client.stub, "你好，这是第一句话。", rest=None, timeout=1.5)
    t0 = time.monotonic()
    s.start()
    s.join(30)
    assert s.error is not None and s.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert s.error_at - t0 < 1.5 + 1.0
    wait_until(lambda: info(stack.decoder.addr).active_streams == 0, 15, "the decoder stream to be closed")
    assert client.stream(["好"], make_config()).summary.audio_ms > 200


def test_half_close_without_reading_then_read_everything(stack, client):
    """The client sends everything and half-closes first, reads only once the decoder has finished the utterance."""
    channel = grpc.insecure_channel(stack.gateway.addr, options=SLOW_CLIENT_OPTS)
    call = tts_pb2_grpc.TextToSpeechStub(channel).StreamingSynthesize(
        # kokoro: slow enough that the open stream is seen (fastspeech2 is done before the first Info poll)
        iter([tts_pb2.StreamingSynthesizeRequest(config=make_config(model="kokoro")),
              tts_pb2.StreamingSynthesizeRequest(text="好的。"), tts_pb2.StreamingSynthesizeRequest(text="再见。")]),
        timeout=120)
    try:
        wait_until(lambda: info(stack.decoder.addr, "kokoro").active_streams == 1, 30, "the decoder stream to open")
        wait_until(lambda: info(stack.decoder.addr, "kokoro").active_streams == 0, 120, "the decoder to finish unread")
        responses = list(call)
    finally:
        channel.close()
    assert responses[-1].summary.segments == 2 and responses[-2].audio.segment_text == "再见。"

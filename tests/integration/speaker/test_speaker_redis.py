"""Speaker service + a real redis-server: miss → hit, Redis killed → still served, Redis back → cache used again."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from tests.procs import RedisServer, Service
from tts.speaker.v1 import speaker_pb2, speaker_pb2_grpc

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = RedisServer(log_dir=tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def speaker(redis, tmp_path_factory):
    svc = Service("speaker", env={"TTS_SPEAKER_REDIS_URL": redis.url, "TTS_SPEAKER_LOCAL_CACHE_ENTRIES": "0"},
                  log_dir=tmp_path_factory.mktemp("speaker")).start()
    yield svc
    svc.stop()


@pytest.fixture
def stub(speaker):
    with grpc.insecure_channel(speaker.addr) as ch:
        yield speaker_pb2_grpc.SpeakerStub(ch)


def embed(stub, path="BAC009S0764W0121.wav"):
    return stub.Embed(speaker_pb2.EmbedRequest(audio=(DATA / path).read_bytes()), timeout=30)


def computations(stub):
    return stub.Info(speaker_pb2.InfoRequest()).cache.computations


def test_miss_then_hit_through_redis(stub):
    before = computations(stub)
    first, second = embed(stub), embed(stub)
    assert len(first.embedding) == 192 and first.reference_id == second.reference_id
    assert second.cache_hit
    assert computations(stub) - before <= 1
    got = stub.GetEmbedding(speaker_pb2.GetEmbeddingRequest(reference_id=first.reference_id))
    assert list(got.embedding) == list(first.embedding)


def test_redis_down_fails_open_and_recovers(stub, redis, speaker, tmp_path):
    port = redis.port
    redis.kill()
    down = embed(stub, "BAC009S0764W0122.wav")              # computed without the cache, not an error
    assert len(down.embedding) == 192 and not down.cache_hit
    assert not stub.Info(speaker_pb2.InfoRequest()).cache.redis_up
    back = RedisServer(port=port, log_dir=tmp_path).start()
    try:
        again = embed(stub, "BAC009S0764W0122.wav")         # miss (Redis came back empty), stored
        assert not again.cache_hit
        assert embed(stub, "BAC009S0764W0122.wav").cache_hit
        assert stub.Info(speaker_pb2.InfoRequest()).cache.redis_up
    finally:
        back.stop()
        redis.start()


def test_fifty_concurrent_identical_requests_compute_once(stub):
    import io

    import numpy as np
    import soundfile as sf

    audio, rate = sf.read(DATA / "BAC009S0764W0121.wav", dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, audio[::-1].copy(), rate, format="WAV")       # new content: not cached yet
    data = buf.getvalue()
    before = computations(stub)
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: stub.Embed(speaker_pb2.EmbedRequest(audio=data), timeout=60), range(50)))
    assert len({r.reference_id for r in results}) == 1
    assert computations(stub) - before == 1


@pytest.mark.parametrize("audio, needle", [(b"", "empty"), (b"not audio at all" * 10, "cannot decode")])
def test_bad_audio_is_invalid_argument_and_service_stays_up(stub, audio, needle):
    with pytest.raises(grpc.RpcError) as err:
        stub.Embed(speaker_pb2.EmbedRequest(audio=audio))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.value.details()
    assert len(embed(stub).embedding) == 192


def test_service_runs_the_ecapa_encoder_when_configured(tmp_path):
    from scripts.make_tiny_ecapa import write_checkpoint

    source = write_checkpoint(tmp_path / "ecapa", dim=96)
    svc = Service("speaker", env={"TTS_SPEAKER_ENCODER": "ecapa", "TTS_SPEAKER_ECAPA_SOURCE": str(source),
                                  "TTS_SPEAKER_REDIS_URL": ""}, log_dir=tmp_path).start()
    try:
        with grpc.insecure_channel(svc.addr) as ch:
            stub = speaker_pb2_grpc.SpeakerStub(ch)
            resp = embed(stub)
            info = stub.Info(speaker_pb2.InfoRequest())
        assert resp.encoder == "ecapa" and len(resp.embedding) == 96
        assert info.default_encoder == "ecapa" and info.encoders[0].dim == 96
    finally:
        svc.stop()


def test_garbage_in_redis_is_a_miss_not_an_error(stub, redis):
    import socket

    first = embed(stub, "BAC009S0764W0122.wav")
    info = stub.Info(speaker_pb2.InfoRequest())
    key = f"tts:spk:v1:{info.encoders[0].name}@{info.encoders[0].version}:{first.reference_id}"
    with socket.create_connection(("127.0.0.1", redis.port)) as s:      # overwrite the value with junk
        s.sendall(f"SET {key} garbage-bytes\r\n".encode())
        assert s.recv(16).startswith(b"+OK")
    again = embed(stub, "BAC009S0764W0122.wav")
    assert not again.cache_hit and list(again.embedding) == list(first.embedding)
    assert embed(stub, "BAC009S0764W0122.wav").cache_hit            # rewritten with a valid value

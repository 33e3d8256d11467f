"""The decoder process serving the glmtts engine (tiny random checkpoint) over gRPC next to the kokoro one."""
from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from tests.procs import Service, wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.frontend.v1 import frontend_pb2


@pytest.fixture(scope="module")
def decoder(tmp_path_factory, glmtts_checkpoint):
    svc = Service("decoder", log_dir=tmp_path_factory.mktemp("decoder-glmtts"), env={
        "TTS_DECODER_ENGINES": "kokoro,glmtts",
        "TTS_DECODER_GLMTTS_PATH": str(glmtts_checkpoint),
        "TTS_DECODER_GLMTTS_MAX_TOKEN_RATIO": "3",
        "TTS_DECODER_GLMTTS_N_TIMESTEPS": "4",
        "TTS_DECODER_GLMTTS_MAX_STREAMS": "3",
        "TTS_DECODER_GLMTTS_LOOKAHEAD": "2",      # a flow block waits for 2 tokens of right context
    }).start()
    yield svc
    assert svc.stop() == 0, svc.log()


@pytest.fixture
def stub(decoder):
    with grpc.insecure_channel(decoder.addr) as ch:
        yield decoder_pb2_grpc.DecoderStub(ch)


def requests(*texts, **cfg):
    yield decoder_pb2.DecodeRequest(config=decoder_pb2.DecodeConfig(engine="glmtts", **cfg))
    for i, t in enumerate(texts):
        yield decoder_pb2.DecodeRequest(segment=frontend_pb2.Segment(index=i, text=t, normalized=t))


def glmtts_info(stub):
    return next(e for e in stub.Info(decoder_pb2.InfoRequest()).engines if e.name == "glmtts")


def chunks_of(responses):
    return [r.chunk for r in responses if r.WhichOneof("response") == "chunk"]


def test_info_lists_both_engines(stub):
    info = {e.name: e for e in stub.Info(decoder_pb2.InfoRequest()).engines}
    assert set(info) == {"kokoro", "glmtts"}
    g = info["glmtts"]
    assert g.supports_cloning and g.sample_rate == 24000 and "default" in g.voices
    assert g.cache_budget_bytes > 0 and g.active_streams == 0
    # the segment sizes the gateway asks the frontend to merge into (the published 30-60 units); kokoro: none
    assert (g.segment_min_units, g.segment_max_units) == (30, 60)
    assert (info["kokoro"].segment_min_units, info["kokoro"].segment_max_units) == (0, 0)


def test_decode_streams_token_chunks_in_order(stub):
    responses = list(stub.Decode(requests("你好", "世界", seed=4, chunk_size=8)))
    chunks = chunks_of(responses)
    summary = responses[-1].summary
    assert summary.engine == "glmtts" and summary.tokens == sum(c.tokens for c in chunks) == 54   # the max token ratio × the LM text (phonemes, end mark)
    assert [c.segment_index for c in chunks] == sorted(c.segment_index for c in chunks)
    first = [c.tokens for c in chunks if c.segment_index == 0]
    assert first[0] == 10 and set(first[1:-1]) <= {8}      # due at 8 + 2 look-ahead tokens, then every 8
    offset = 0
    for c in chunks:
        assert c.offset_samples == offset
        offset += c.num_samples
    audio = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<f4")
    assert len(audio) == summary.tokens * 960 and np.isfinite(audio).all()


def test_same_seed_gives_the_same_audio_over_grpc(stub):
    a = chunks_of(stub.Decode(requests("一二", seed=7)))
    b = chunks_of(stub.Decode(requests("一二", seed=7)))
    assert b"".join(c.pcm for c in a) == b"".join(c.pcm for c in b)


def test_cancelled_streams_free_their_cache(stub):
    for _ in range(5):
        call = stub.Decode(requests("一二三四五六七八九十" * 3, seed=1))
        next(call)                      # the first chunk arrived: the stream is mid-decoding
        call.cancel()
    # cache_bytes counts a cancelled stream's blocks until the LM pass holding them ends
    wait_until(lambda: glmtts_info(stub).active_streams == 0 and glmtts_info(stub).cache_bytes == 0, 30,
               "cancelled glmtts streams to leave and their KV blocks to be freed")


def test_streams_over_the_budget_are_resource_exhausted_with_retry_info(stub):
    calls = [stub.Decode(requests("一二三四五六七八九十" * 3, seed=i)) for i in range(3)]
    try:
        for c in calls:
            next(c)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Decode(requests("你好")))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "glmtts" in err.value.details()
        trailers = dict(err.value.trailing_metadata() or ())
        assert "grpc-status-details-bin" in trailers
    finally:
        for c in calls:
            c.cancel()


def test_clear_cache_frees_an_idle_streams_state(stub):
    release = threading.Event()

    def reqs():                          # one segment, then the stream stays open and idle until released
        yield from requests("你好", seed=3)
        release.wait(30)

    call = stub.Decode(reqs())
    for r in call:
        if r.WhichOneof("response") == "chunk" and r.chunk.segment_end:
            break
    assert glmtts_info(stub).cache_bytes > 0
    freed = stub.ClearCache(decoder_pb2.ClearCacheRequest())
    assert glmtts_info(stub).cache_bytes == 0
    release.set()
    rest = list(call)
    assert freed.freed_streams == 1 and freed.freed_bytes > 0
    assert rest[-1].WhichOneof("response") == "summary"


def test_unknown_glmtts_voice_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Decode(requests("你好", voice="nobody")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("config.voice")

"""The decoder service as a real process: Decode over gRPC, errors, cancellation, ClearCache, Info."""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from tests.procs import Service, wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.frontend.v1 import frontend_pb2


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    svc = Service("decoder", log_dir=tmp_path_factory.mktemp("decoder")).start()
    yield svc
    assert svc.stop() == 0, svc.log()            # SIGTERM → drain → clean exit


@pytest.fixture
def stub(decoder):
    with grpc.insecure_channel(decoder.addr) as ch:
        yield decoder_pb2_grpc.DecoderStub(ch)


def seg(i, text, *pinyin):
    """A segment of Chinese characters (one pinyin syllable each) and marks (None), as the frontend sends it."""
    words = [frontend_pb2.Word(text=c, lang="punct" if p is None else "zh", pinyin=[] if p is None else [p],
                               citation_pinyin=[] if p is None else [p], span=frontend_pb2.Span(start=k, end=k + 1))
             for k, (c, p) in enumerate(zip(text, pinyin))]
    return decoder_pb2.DecodeRequest(segment=frontend_pb2.Segment(index=i, text=text, normalized=text, words=words))


def config(**kw):
    return decoder_pb2.DecodeRequest(config=decoder_pb2.DecodeConfig(**kw))


def test_decode_streams_pcm_chunks_with_offsets(stub):
    responses = list(stub.Decode(iter([config(), seg(0, "你好，", "ni2", "hao3", None),
                                       seg(1, "世界。", "shi4", "jie4", None)])))
    chunks = [r.chunk for r in responses if r.WhichOneof("response") == "chunk"]
    summary = responses[-1].summary
    offset = 0
    for c in chunks:
        assert c.sample_rate == 24000 and c.offset_samples == offset and len(c.pcm) == 4 * c.num_samples
        offset += c.num_samples
    assert summary.samples == offset and summary.engine == "fastspeech2" and summary.tokens > 0
    audio = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<f4")
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0.05


@pytest.mark.parametrize("requests, code, prefix", [
    ([seg(0, "好", "hao3")], grpc.StatusCode.INVALID_ARGUMENT, "config"),
    ([config(), config()], grpc.StatusCode.INVALID_ARGUMENT, "config"),
    ([config(engine="nope")], grpc.StatusCode.INVALID_ARGUMENT, "config.engine"),
    ([config(voice="nobody")], grpc.StatusCode.INVALID_ARGUMENT, "config.voice"),
    ([config(speed=5)], grpc.StatusCode.INVALID_ARGUMENT, "config.speed"),
    ([config(speaker=decoder_pb2.SpeakerConditioning(embedding=[0.1] * 192))], grpc.StatusCode.INVALID_ARGUMENT,
     "config.voice"),
])
def test_bad_requests_get_clear_status(stub, requests, code, prefix):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Decode(iter(requests)))
    assert err.value.code() == code
    assert err.value.details().startswith(prefix), err.value.details()


def test_cancelled_streams_are_freed(stub):
    for _ in range(5):
        call = stub.Decode(iter([config(), seg(0, "你好，" * 20, *["ni2", "hao3", None] * 20)]))
        next(call)                     # first chunk arrived: the stream is live on the server
        call.cancel()
    wait_until(lambda: stub.Info(decoder_pb2.InfoRequest()).engines[0].active_streams == 0, 10,
               "cancelled streams to be released")


def test_info_and_clear_cache(stub):
    info = stub.Info(decoder_pb2.InfoRequest())
    assert info.default_engine == "fastspeech2" and [e.name for e in info.engines] == ["fastspeech2", "kokoro"]
    baker, kokoro = info.engines
    assert list(baker.voices) == ["baker"] and list(baker.languages) == ["zh"] and not baker.supports_cloning
    assert baker.model.startswith("FastSpeech2") and "non-commercial" in baker.license and not baker.aliases
    assert "jm_kumo" in kokoro.voices and not kokoro.supports_cloning
    assert kokoro.model.startswith("Kokoro-82M") and kokoro.license == "Apache-2.0"
    assert list(kokoro.languages) == ["zh", "en"] and list(kokoro.aliases) == ["embedded"]
    resp = stub.ClearCache(decoder_pb2.ClearCacheRequest())
    assert resp.freed_streams == 0      # neither engine keeps idle state


def test_the_earlier_engine_name_still_decodes_for_one_release(stub, decoder):
    responses = list(stub.Decode(iter([config(engine="embedded"), seg(0, "你好。", "ni2", "hao3", None)])))
    assert responses[-1].summary.engine == "kokoro" and responses[-1].summary.samples > 0
    wait_until(lambda: "engine 'embedded' is deprecated: it is now 'kokoro'" in decoder.log(), 10, "the warning")


def test_health_and_reflection(decoder):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    assert decoder.health() == "SERVING"
    with grpc.insecure_channel(decoder.addr) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
    assert {"tts.decoder.v1.Decoder", "grpc.health.v1.Health"} <= names


def test_check_admission_answers_without_holding_anything(stub):
    resp = stub.CheckAdmission(decoder_pb2.CheckAdmissionRequest(tenant="alice"))
    assert resp.admitted and not resp.reason
    assert stub.Info(decoder_pb2.InfoRequest()).engines[0].active_streams == 0
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckAdmission(decoder_pb2.CheckAdmissionRequest(engine="nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_decoder_warns_about_the_baker_licence_when_it_starts(decoder):
    line = next(json.loads(x) for x in decoder.log().splitlines()
                if x.startswith("{") and "non-commercial" in x)
    assert line["level"] == "warning" and "kokoro" in line["msg"] and "CC BY-NC-SA 4.0" in line["license"]

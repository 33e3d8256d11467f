"""Admission by real-time capacity through the gateway: two decoders that each hold one real-time stream (their
target utilization is set so low that the measured throughput covers exactly the one stream they always admit).
A decoder at capacity refuses with RESOURCE_EXHAUSTED; the gateway tries the other one; when both are full the
caller gets RESOURCE_EXHAUSTED with retry info. The stream summary carries the playback margin and stalls."""
from __future__ import annotations

import grpc
import pytest

from tests.e2e.test_faults import Streamer, info
from tests.procs import make_stack, wait_until
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client.client import make_config

ONE_STREAM = {"TTS_DECODER_FASTSPEECH2_TARGET_UTILIZATION": "0.000001", "TTS_DECODER_FASTSPEECH2_MIN_STREAMS": "1",
              "TTS_DECODER_FASTSPEECH2_ADMISSION_IDLE_S": "600"}


@pytest.fixture(scope="module")
def cap(stack):
    own = make_stack(stack.tmp, base=stack, start=("decoder", "gateway"), decoders=2, **ONE_STREAM,
                     TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=120)
    channel = grpc.insecure_channel(own.gateway.addr)
    yield tts_pb2_grpc.TextToSpeechStub(channel), own.decoders, own.gateway
    channel.close()
    own.stop()


def synth(stub, text="好的。"):
    return list(stub.StreamingSynthesize(iter([tts_pb2.StreamingSynthesizeRequest(config=make_config()),
                                               tts_pb2.StreamingSynthesizeRequest(text=text)]), timeout=120))


def held(stub):
    s = Streamer(stub, "您好，请稍等。", rest="我马上为您查询。")
    s.start()
    wait_until(lambda: s.first_chunk.is_set() or s.done.is_set(), 120, "first audio of a held stream")
    assert s.error is None, s.error
    return s


def test_a_full_decoder_refuses_the_gateway_moves_on_and_then_refuses_with_retry_info(cap):
    stub, decoders, gateway = cap
    assert synth(stub)[-1].summary.audio_ms > 0             # warm-up (the gateway caches the voice list)
    first = held(stub)
    busy = [d for d in decoders if info(d.addr).active_streams == 1]
    assert len(busy) == 1
    # round-robin picks the full decoder for one of two consecutive streams: the gateway's admission probe moves it
    # to the other before anything is opened (no Decode call refused and replayed)
    for _ in range(2):
        assert synth(stub)[-1].summary.audio_ms > 0
    assert "retrying on another decoder" not in gateway.log()
    second = held(stub)
    assert all(info(d.addr).active_streams == 1 for d in decoders)
    with pytest.raises(grpc.RpcError) as err:
        synth(stub)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "real-time capacity" in err.value.details()
    assert any(k == "retry-after-ms" and int(v) > 0 for k, v in err.value.trailing_metadata())
    for s in (first, second):
        s.finish()
        assert s.error is None and s.summary is not None
        sm = s.summary
        # the gateway watched playback: a margin was measured (more than one chunk), stalls add up
        assert len(s.chunks) > 1 and sm.min_playback_margin_ms != 0
        assert sm.min_playback_margin_ms < sm.audio_ms
        assert sm.stall_ms >= 10 * sm.stalls and (sm.stalls > 0) == (sm.min_playback_margin_ms < -10)

"""Real-time capacity shared fairly between tenants, and batch work that waits for it (issue 23, findings 1 and 2),
on real processes: auth on with two tenants, one decoder pod (fastspeech2) that carries two real-time streams (its
measured capacity pinned below that, so its floor ``MIN_STREAMS`` = 2 is the capacity), a gateway without
per-tenant stream caps, the session stack's frontend, speaker and redis."""
from __future__ import annotations

import json
import secrets
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.auth import hash_token
from tests.e2e.test_faults import Streamer, info
from tests.procs import free_port, make_stack, wait_until
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client import TTSClient
from tts_client.client import make_config

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("alice", "bob")}


def md(tenant):
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


@pytest.fixture(scope="module")
def pod(stack):
    metrics = free_port()
    own = make_stack(stack.tmp, base=stack, start=("decoder", "gateway"), TTS_DECODER_ENGINES="fastspeech2",
                     TTS_DECODER_FASTSPEECH2_TARGET_UTILIZATION="0.000001", TTS_DECODER_FASTSPEECH2_MIN_STREAMS="2",
                     TTS_DECODER_FASTSPEECH2_ADMISSION_IDLE_S="600", TTS_DECODER_FASTSPEECH2_MAX_BATCH="1",
                     TTS_GATEWAY_TOKENS=",".join(f"{t}:{hash_token(tok)}" for t, tok in TOKENS.items()),
                     TTS_GATEWAY_MAX_STREAMS_PER_TENANT=0, TTS_GATEWAY_RATE_PER_TENANT=0,
                     TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=120, TTS_GATEWAY_BATCH_OUTPUT_DIR=stack.tmp / "fair-out",
                     TTS_GATEWAY_METRICS_PORT=metrics)
    channel = grpc.insecure_channel(own.gateway.addr)
    yield tts_pb2_grpc.TextToSpeechStub(channel), own, metrics
    channel.close()
    own.stop()


def synth(stub, tenant, text="好的。"):
    return list(stub.StreamingSynthesize(iter([tts_pb2.StreamingSynthesizeRequest(config=make_config()),
                                               tts_pb2.StreamingSynthesizeRequest(text=text)]),
                                         metadata=md(tenant), timeout=120))


def hold(stub, tenant, n):
    """``n`` streams of ``tenant`` that have spoken their first clause and stay open (they need capacity)."""
    held = [Streamer(stub, "您好，请稍等。", rest="我马上为您查询。", metadata=md(tenant)) for _ in range(n)]
    for s in held:
        s.start()
        wait_until(lambda: s.first_chunk.is_set() or s.done.is_set(), 120, "first audio of a held stream")
        assert s.error is None, s.error
    return held


def idle(own):
    """Wait until no stream needs the pod's capacity (earlier streams' audio has played out)."""
    wait_until(lambda: info(own.decoder.addr).headroom_streams >= 2, 60, "the pod's capacity free again")


def waits(port) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        families = text_string_to_metric_families(resp.read().decode())
    return sum(s.value for f in families for s in f.samples if s.name == "tts_gateway_batch_capacity_waits_total")


def test_one_tenants_streams_do_not_lock_another_out(pod):
    stub, own, _ = pod
    assert synth(stub, "alice")[-1].summary.audio_ms > 0          # warm-up
    idle(own)
    bob = hold(stub, "bob", 2)                                     # bob alone: the whole pod is his
    assert info(own.decoder.addr).active_streams == 2
    # alice is served beside him: she is below her fair share (1 of 2) while bob is above his
    alice = hold(stub, "alice", 1)
    # bob's next stream is refused, naming the fair share, with retry info
    with pytest.raises(grpc.RpcError) as err:
        synth(stub, "bob")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "fair_share" in err.value.details()
    assert any(k == "retry-after-ms" and int(v) > 0 for k, v in err.value.trailing_metadata())
    for s in bob + alice:
        s.finish()
        assert s.error is None and s.summary.audio_ms > 0


def test_batch_lines_wait_for_capacity_and_never_fail_for_it(pod):
    stub, own, metrics = pod
    idle(own)
    bob = hold(stub, "bob", 2)                                     # live streams fill the pod
    alice = TTSClient(own.gateway.addr, token=TOKENS["alice"], timeout=60)
    lines = "\n".join(json.dumps({"uttid": f"u{i}", "syn_text": "您好，这是一条批量合成的句子。"}, ensure_ascii=False)
                      for i in range(3)).encode()
    before = waits(metrics)
    job = alice.submit_batch(jsonl=lines)
    # the decoder refuses batch work while live streams use its capacity: the line waits (more refusals than the
    # 3 retries a failing line would get), it does not fail
    wait_until(lambda: waits(metrics) >= before + 5, 120, "batch lines refused for capacity and waiting")
    state = alice.get_batch(job.id)
    assert state.done == 0 and state.failed == 0
    assert info(own.decoder.addr).active_streams == 2                # batch took none of the live capacity
    for s in bob:
        s.finish()
    final = None
    for ev in alice.watch_batch(job.id, timeout=180):
        final = ev.job
    assert final.state == tts_pb2.BATCH_DONE and (final.done, final.failed) == (3, 0)

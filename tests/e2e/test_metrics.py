"""Observability end to end: Prometheus /metrics scraped over HTTP after one synthesis, and the gateway's request id
and tenant in a stage's JSON log lines.

Own stack (metrics ports on, a tenant token, a private copy of the replace dictionary): real redis-server, frontend,
decoder and gateway (the speaker too when ``services/speaker`` exists).
"""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.auth import hash_token
from tests.procs import ROLES, ROOT, Service, free_port, make_stack, wait_until
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client.client import make_config

TOKEN = "metrics-tenant-token"
HAVE_SPEAKER = (ROOT / "services" / "speaker" / "__main__.py").exists()


class MetricsStack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.dict_path = tmp / "replace_dict.jsonl"
        shutil.copy(ROOT / "configs" / "G2P_replace_dict.jsonl", self.dict_path)
        self.metrics = {name: free_port() for name in ("gateway", "frontend", "decoder")}
        self.own = make_stack(
            tmp, start=ROLES if HAVE_SPEAKER else tuple(r for r in ROLES if r != "speaker"),
            TTS_FRONTEND_METRICS_PORT=self.metrics["frontend"], TTS_FRONTEND_REPLACE_DICT_PATH=self.dict_path,
            TTS_FRONTEND_DICT_CHECK_INTERVAL_S=0, TTS_DECODER_METRICS_PORT=self.metrics["decoder"],
            TTS_GATEWAY_METRICS_PORT=self.metrics["gateway"], TTS_GATEWAY_TOKENS=f"obs-tenant:{hash_token(TOKEN)}")
        self.redis, self.frontend, self.speaker, self.decoder, self.gateway = (
            self.own.redis, self.own.frontend, self.own.speaker, self.own.decoder, self.own.gateway)
        self.channel = grpc.insecure_channel(self.gateway.addr)
        self.stub = tts_pb2_grpc.TextToSpeechStub(self.channel)

    def scrape(self, service: str) -> dict[tuple[str, tuple], float]:
        """{(sample name, sorted labels): value} from the service's /metrics over HTTP."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics[service]}/metrics", timeout=5) as resp:
            assert resp.status == 200
            text = resp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def stop(self):
        self.channel.close()
        self.own.stop()


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    s = MetricsStack(tmp_path_factory.mktemp("metrics"))
    yield s
    s.stop()


def synthesize(ms, text: str, metadata=()) -> list:
    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=make_config())
        yield tts_pb2.StreamingSynthesizeRequest(text=text)

    return list(ms.stub.StreamingSynthesize(requests(), metadata=(("authorization", f"Bearer {TOKEN}"), *metadata),
                                            timeout=60))


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


def test_metrics_after_one_synthesis(ms):
    before = {svc: ms.scrape(svc) for svc in ("gateway", "decoder", "frontend")}
    responses = synthesize(ms, "今天天气很好，我们去公园散步吧。")
    summary = responses[-1].summary
    assert summary.audio_ms > 500

    def grew(_svc, _name, **labels):
        return value(ms.scrape(_svc), _name, **labels) - value(before[_svc], _name, **labels)

    # per-RPC latency is observed when each RPC's handler returns, which may be just after the client has the last
    # message: poll (bounded) for those
    for svc, method in (("gateway", "StreamingSynthesize"), ("decoder", "Decode"), ("frontend", "Normalize")):
        wait_until(lambda: grew(svc, "tts_rpc_duration_seconds_count", service=svc, method=method) >= 1, 5,
                   f"{svc} {method} in tts_rpc_duration_seconds")
    gw, dec, fe = ms.scrape("gateway"), ms.scrape("decoder"), ms.scrape("frontend")

    # gateway: first-chunk latency and RTF histograms, outcome counter, per-RPC latency
    assert grew("gateway", "tts_gateway_first_chunk_seconds_count") >= 1
    assert value(gw, "tts_gateway_first_chunk_seconds_sum") > 0
    assert grew("gateway", "tts_gateway_real_time_factor_count") >= 1
    assert grew("gateway", "tts_gateway_syntheses_total", rpc="StreamingSynthesize", outcome="ok") == 1
    assert grew("gateway", "tts_rpc_duration_seconds_count", service="gateway", method="StreamingSynthesize") == 1
    assert value(gw, "tts_rpc_duration_seconds_sum", service="gateway", method="StreamingSynthesize") > 0
    # decoder: the audio it produced (what the client got), one Decode RPC, no stream left open
    audio_s = grew("decoder", "tts_decoder_audio_seconds_total")
    assert audio_s > 0
    assert audio_s == pytest.approx(summary.audio_ms / 1000, rel=0.05)
    assert grew("decoder", "tts_rpc_duration_seconds_count", service="decoder", method="Decode") == 1
    assert grew("decoder", "tts_decoder_first_chunk_seconds_count") >= 1
    assert grew("decoder", "tts_decoder_tokens_per_second_count", engine="fastspeech2") == 1
    assert grew("decoder", "tts_decoder_tokens_per_second_sum", engine="fastspeech2") > 0
    assert value(dec, "tts_decoder_active_streams") == 0
    # frontend: one Normalize stream, nothing in flight
    assert grew("frontend", "tts_rpc_duration_seconds_count", service="frontend", method="Normalize") == 1
    assert value(fe, "tts_rpc_in_flight", service="frontend") == 0


def test_errors_are_counted_by_code(ms):
    before = value(ms.scrape("gateway"), "tts_rpc_errors_total", service="gateway", code="INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError) as err:
        list(ms.stub.StreamingSynthesize(
            iter([tts_pb2.StreamingSynthesizeRequest(config=make_config(sample_rate=12345))]),
            metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = value(ms.scrape("gateway"), "tts_rpc_errors_total", service="gateway", code="INVALID_ARGUMENT")
    assert after - before == 1


def _log_lines(svc: Service) -> list[dict]:
    out = []
    for line in svc.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue          # grpc's own C-core lines
    return out


def test_a_stage_log_line_carries_the_gateways_request_id_and_tenant(ms):
    # Editing the replace dictionary makes the frontend reload it inside the next Normalize call and log
    # "replace dictionary loaded" there, in that RPC's context.
    with ms.dict_path.open("a") as f:
        f.write(json.dumps({"char": "行", "pinyin": "hang2", "context": "银行卡"}, ensure_ascii=False) + "\n")

    # the gateway makes up the request id (the client sent none) and returns it in the summary
    summary = synthesize(ms, "我的银行卡丢了。")[-1].summary
    rid = summary.request_id
    assert rid

    def reload_line():
        return [r for r in _log_lines(ms.frontend) if r.get("msg") == "replace dictionary loaded"
                and r.get("request_id") == rid]

    lines = wait_until(reload_line, 5, "the frontend's log line")
    assert lines[0]["tenant"] == "obs-tenant" and lines[0]["service"] == "frontend"

    # a request id sent by the client is kept end to end
    with ms.dict_path.open("a") as f:
        f.write(json.dumps({"char": "长", "pinyin": "zhang3", "context": "长大"}, ensure_ascii=False) + "\n")
    summary = synthesize(ms, "孩子长大了。", metadata=(("x-request-id", "client-req-42"),))[-1].summary
    assert summary.request_id == "client-req-42"
    rid = "client-req-42"
    assert wait_until(reload_line, 5, "the frontend's log line for the client's request id")

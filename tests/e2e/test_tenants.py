"""Tenants end to end: bearer tokens, voice isolation, per-tenant quotas, and the internal token between services.

The stack here is its own (tokens, limits and an internal token set): real redis-server, frontend, decoder, gateway
(and the speaker when ``services/speaker`` exists; else the gateway points at an unused port, which none of these
tests reaches).
"""
from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.gateway.auth import hash_token
from services.gateway.voices import VoiceRegistry
from shared.errors import NotFound
from tests.procs import ROLES, ROOT, make_stack, wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client.client import make_config

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("a", "b", "c", "d")}
INTERNAL = "internal-" + secrets.token_hex(16)
MAX_STREAMS, RATE, BURST = 2, 5.0, 10.0
HAVE_SPEAKER = (ROOT / "services" / "speaker" / "__main__.py").exists()


class TenantStack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        tokens_file = tmp / "tokens"
        # a, b, d from the file; c from the TTS_GATEWAY_TOKENS env var (both sources are merged)
        tokens_file.write_text("# tenant sha256(token)\n" +
                               "".join(f"{t} {hash_token(TOKENS[t])}\n" for t in ("a", "b", "d")))
        self.own = make_stack(
            tmp, start=ROLES if HAVE_SPEAKER else tuple(r for r in ROLES if r != "speaker"),
            TTS_INTERNAL_TOKEN=INTERNAL,          # every stage, and the gateway
            TTS_GATEWAY_TOKENS_FILE=tokens_file, TTS_GATEWAY_TOKENS=f"c:{hash_token(TOKENS['c'])}",
            TTS_GATEWAY_MAX_STREAMS_PER_TENANT=MAX_STREAMS, TTS_GATEWAY_RATE_PER_TENANT=RATE,
            TTS_GATEWAY_BURST_PER_TENANT=BURST, TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=30)
        self.redis, self.frontend, self.speaker, self.decoder, self.gateway = (
            self.own.redis, self.own.frontend, self.own.speaker, self.own.decoder, self.own.gateway)
        self.channel = grpc.insecure_channel(self.gateway.addr)
        self.stub = tts_pb2_grpc.TextToSpeechStub(self.channel)

    def stop(self):
        self.channel.close()
        self.own.stop()


@pytest.fixture(scope="module")
def ts(tmp_path_factory):
    s = TenantStack(tmp_path_factory.mktemp("tenants"))
    yield s
    s.stop()


def md(tenant: str) -> tuple:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def stream_requests(text="你好。", config=None):
    yield tts_pb2.StreamingSynthesizeRequest(config=config or make_config())
    yield tts_pb2.StreamingSynthesizeRequest(text=text)


def synth(ts, tenant, text="你好。", config=None) -> list:
    return list(ts.stub.StreamingSynthesize(stream_requests(text, config), metadata=md(tenant), timeout=60))


def retry_info(err: grpc.RpcError) -> tuple[float, dict]:
    """google.rpc.RetryInfo from grpc-status-details-bin (seconds), and the trailers as a dict."""
    trailers = dict(err.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.RetryInfo()
    infos[0].Unpack(info)
    return info.retry_delay.ToTimedelta().total_seconds(), trailers


# ---- authentication ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong-token"),),
                                      (("authorization", f"Basic {TOKENS['a']}"),),
                                      (("authorization", f"Bearer {hash_token(TOKENS['a'])}"),)])
def test_missing_or_bad_token_is_unauthenticated(ts, metadata):
    for call in (lambda: ts.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=metadata, timeout=10),
                 lambda: list(ts.stub.StreamingSynthesize(stream_requests(), metadata=metadata, timeout=10)),
                 lambda: ts.stub.Synthesize(tts_pb2.SynthesizeRequest(config=make_config(), text="你好"),
                                            metadata=metadata, timeout=10)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_token(ts):
    assert ts.gateway.health() == "SERVING"


def test_token_from_file_and_from_env_var_both_work(ts):
    for tenant in ("a", "c"):
        voices = ts.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=md(tenant), timeout=10).voices
        assert any(v.builtin for v in voices)


# ---- voices are per tenant -----------------------------------------------------------------------------------------
def test_voice_registry_scopes_every_operation_by_tenant(ts):
    async def scenario():
        reg = VoiceRegistry(ts.redis.url)
        ta, tb = "iso-a-" + secrets.token_hex(4), "iso-b-" + secrets.token_hex(4)
        try:
            va = await reg.add(ta, "alice", "ref-a", "campplus", "你好", 3.0, b"\0\0" * 16)
            vb = await reg.add(tb, "bob", "ref-b", "campplus", "您好", 4.0, b"\1\0" * 16)
            assert [v.id for v in await reg.list(ta)] == [va.id]
            assert [v.id for v in await reg.list(tb)] == [vb.id]
            with pytest.raises(NotFound):
                await reg.get(ta, vb.id)
            with pytest.raises(NotFound):
                await reg.delete(ta, vb.id)
            assert (await reg.get(tb, vb.id)).name == "bob"          # untouched by a's delete
            await reg.delete(tb, vb.id)
            assert await reg.list(tb) == []
            assert [v.id for v in await reg.list(ta)] == [va.id]
        finally:
            await reg.close()

    asyncio.run(scenario())


def test_a_tenant_cannot_list_use_or_delete_another_tenants_voice(ts):
    # b's voice is put in the registry the gateway reads (RegisterVoice itself needs the speaker stage)
    async def add():
        reg = VoiceRegistry(ts.redis.url)
        try:
            return await reg.add("b", "bobs-voice", "ref-" + secrets.token_hex(8), "campplus", "您好", 4.0,
                                 b"\0\0" * 1600)
        finally:
            await reg.close()

    vb = asyncio.run(add())
    ids = lambda t: {v.id for v in ts.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=md(t), timeout=10).voices}
    assert vb.id in ids("b")
    assert vb.id not in ids("a")

    with pytest.raises(grpc.RpcError) as err:
        ts.stub.DeleteVoice(tts_pb2.DeleteVoiceRequest(id=vb.id), metadata=md("a"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.RpcError) as err:
        synth(ts, "a", config=make_config(voice=vb.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        ts.stub.Synthesize(tts_pb2.SynthesizeRequest(config=make_config(voice=vb.id), text="你好"),
                           metadata=md("a"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    assert vb.id in ids("b")                                    # still there for its owner
    ts.stub.DeleteVoice(tts_pb2.DeleteVoiceRequest(id=vb.id), metadata=md("b"), timeout=10)
    assert vb.id not in ids("b")


# ---- quotas --------------------------------------------------------------------------------------------------------
class HeldStream:
    """A StreamingSynthesize that has produced audio (so the gateway holds its slot) and is kept open."""

    def __init__(self, ts, tenant):
        self.release = threading.Event()

        def requests():
            yield tts_pb2.StreamingSynthesizeRequest(config=make_config())
            yield tts_pb2.StreamingSynthesizeRequest(text="你好。")
            yield tts_pb2.StreamingSynthesizeRequest(flush=tts_pb2.Flush())
            self.release.wait(60)                                # the "LLM" is still thinking

        self.call = ts.stub.StreamingSynthesize(requests(), metadata=md(tenant), timeout=60)
        first = next(self.call)
        assert first.WhichOneof("response") == "audio"

    def cancel(self):
        self.call.cancel()
        self.release.set()

    def finish(self) -> list:
        self.release.set()
        return list(self.call)


def test_concurrent_stream_quota(ts):
    held = [HeldStream(ts, "d") for _ in range(MAX_STREAMS)]
    try:
        with pytest.raises(grpc.RpcError) as err:
            synth(ts, "d")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "streams open" in err.value.details()
        delay, trailers = retry_info(err.value)
        assert delay == pytest.approx(1.0)
        assert trailers["retry-after-ms"] == "1000"
        # unary Synthesize takes a slot too
        with pytest.raises(grpc.RpcError) as err:
            ts.stub.Synthesize(tts_pb2.SynthesizeRequest(config=make_config(), text="你好"), metadata=md("d"),
                               timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # another tenant is not affected
        assert synth(ts, "a")[-1].WhichOneof("response") == "summary"

        # a cancelled stream gives its slot back
        held[0].cancel()

        def served():
            try:
                return synth(ts, "d")[-1].WhichOneof("response") == "summary"
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
                return False

        assert wait_until(served, 10, "the cancelled stream's slot to be released", interval=0.1)
        # a stream that ends normally gives its slot back too
        assert held[1].finish()[-1].WhichOneof("response") == "summary"
        assert wait_until(served, 10, "both slots free", interval=0.1)
        extra = HeldStream(ts, "d")                              # two at once work again
        assert synth(ts, "d")[-1].WhichOneof("response") == "summary"
        extra.finish()
    finally:
        for h in held:
            h.release.set()


def test_rate_limit(ts):
    err = None
    for _ in range(int(BURST * 10)):
        try:
            ts.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=md("c"), timeout=10)
        except grpc.RpcError as e:
            err = e
            break
    assert err is not None, "never rate limited"
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in err.details()
    delay, trailers = retry_info(err)
    assert 0 < delay <= 1 / RATE + 1e-6
    assert 0 <= int(trailers["retry-after-ms"]) <= 1000 / RATE
    # other tenants have their own bucket
    ts.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=md("a"), timeout=10)

    def allowed_again():
        try:
            ts.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=md("c"), timeout=10)
            return True
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False

    assert wait_until(allowed_again, 5, "the bucket to refill", interval=delay or 0.05)


# ---- internal token between the gateway and the stages -------------------------------------------------------------
def test_stages_accept_only_calls_with_the_internal_token(ts):
    # through the gateway (which sends the token on unary and streaming stage calls): works
    responses = synth(ts, "a", "内部调用测试。")
    assert responses[-1].summary.audio_ms > 300
    analyzed = ts.stub.AnalyzeText(tts_pb2.AnalyzeTextRequest(text="你好"), metadata=md("a"), timeout=10)
    assert analyzed.segments

    with grpc.insecure_channel(ts.decoder.addr) as ch:
        stub = decoder_pb2_grpc.DecoderStub(ch)
        for metadata in ((), (("x-internal-token", "nope"),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Info(decoder_pb2.InfoRequest(), metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.Info(decoder_pb2.InfoRequest(), metadata=(("x-internal-token", INTERNAL),), timeout=10).engines
    with grpc.insecure_channel(ts.frontend.addr) as ch:
        with pytest.raises(grpc.RpcError) as err:
            frontend_pb2_grpc.FrontendStub(ch).Analyze(frontend_pb2.AnalyzeRequest(text="你好"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # probes stay open
    assert ts.decoder.health() == "SERVING" and ts.frontend.health() == "SERVING"

"""shared.internal_auth: the stage-side token check and the gateway-side metadata, over real loopback gRPC."""
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.decoder.settings import DecoderSettings
from services.gateway.settings import GatewaySettings
from shared import internal_auth
from shared.internal_auth import InternalTokenInterceptor, token_client_interceptors

TOKEN = "s3cret-internal"


async def _echo_unary(request, context):
    md = dict(context.invocation_metadata())
    return b"ok:" + request + b":" + md.get("x-internal-token", "").encode()


async def _echo_stream(request_iterator, context):
    async for req in request_iterator:
        yield b"ok:" + req


async def _server_stream(request, context):
    yield b"ok:" + request


HANDLERS = grpc.method_handlers_generic_handler("test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(_echo_unary),
    "Stream": grpc.stream_stream_rpc_method_handler(_echo_stream),
    "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
})


@pytest_asyncio.fixture(loop_scope="function")
async def server():
    srv = grpc.aio.server(interceptors=[InternalTokenInterceptor(TOKEN)])
    srv.add_generic_rpc_handlers((HANDLERS,))
    hs = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}"
    await srv.stop(0)


async def _calls(channel, metadata=None):
    unary = channel.unary_unary("/test.Echo/Unary")
    stream = channel.stream_stream("/test.Echo/Stream")
    server_stream = channel.unary_stream("/test.Echo/ServerStream")
    out = [await unary(b"x", metadata=metadata, timeout=5)]
    out += [r async for r in stream(iter([b"a", b"b"]), metadata=metadata, timeout=5)]
    out += [r async for r in server_stream(b"s", metadata=metadata, timeout=5)]
    return out


@pytest.mark.parametrize("metadata", [None, (("x-internal-token", "wrong"),), (("x-internal-token", TOKEN[:-1]),),
                                      (("authorization", f"Bearer {TOKEN}"),)])
async def test_calls_without_the_right_token_are_unauthenticated(server, metadata):
    async with grpc.aio.insecure_channel(server) as ch:
        for method in ("unary", "stream", "server_stream"):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                if method == "unary":
                    await ch.unary_unary("/test.Echo/Unary")(b"x", metadata=metadata, timeout=5)
                elif method == "stream":
                    async for _ in ch.stream_stream("/test.Echo/Stream")(iter([b"a"]), metadata=metadata, timeout=5):
                        pass
                else:
                    async for _ in ch.unary_stream("/test.Echo/ServerStream")(b"s", metadata=metadata, timeout=5):
                        pass
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            assert "x-internal-token" in exc.value.details()


async def test_right_token_passes(server):
    async with grpc.aio.insecure_channel(server) as ch:
        assert await _calls(ch, (("x-internal-token", TOKEN),)) == [
            b"ok:x:" + TOKEN.encode(), b"ok:a", b"ok:b", b"ok:s"]


async def test_health_is_exempt(server):
    async with grpc.aio.insecure_channel(server) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_client_interceptor_adds_the_token_to_every_kind_of_call(server):
    async with grpc.aio.insecure_channel(server, interceptors=token_client_interceptors(TOKEN)) as ch:
        assert await _calls(ch) == [b"ok:x:" + TOKEN.encode(), b"ok:a", b"ok:b", b"ok:s"]
        # caller metadata is kept, a caller-supplied token is replaced
        unary = ch.unary_unary("/test.Echo/Unary")
        assert await unary(b"y", metadata=(("x-request-id", "r1"), ("x-internal-token", "bad")), timeout=5) == \
            b"ok:y:" + TOKEN.encode()


def test_env_switches(monkeypatch):
    """TTS_INTERNAL_TOKEN reaches every service's settings (whatever its prefix) and switches both sides on."""
    monkeypatch.delenv("TTS_INTERNAL_TOKEN", raising=False)
    assert internal_auth.server_interceptors("decoder", DecoderSettings().internal_token) == []
    assert internal_auth.client_interceptors(GatewaySettings().internal_token) == []
    monkeypatch.setenv("TTS_INTERNAL_TOKEN", TOKEN)
    assert [type(i) for i in internal_auth.server_interceptors("decoder", DecoderSettings().internal_token)] == \
        [InternalTokenInterceptor]
    # the public API uses tenant tokens
    assert internal_auth.server_interceptors("gateway", GatewaySettings().internal_token) == []
    # unary-unary, unary-stream, stream-unary, stream-stream
    assert len(internal_auth.client_interceptors(GatewaySettings().internal_token)) == 4
    with pytest.raises(ValueError):
        InternalTokenInterceptor("")

"""A bidi call rejected before any response, while the client is still writing, reaches the client with its real
status (not grpc's INTERNAL "Internal error from Core"): a real grpc.aio server and client on loopback."""
import asyncio
import contextlib

import grpc
import pytest

from shared.errors import InvalidArgument
from shared.interceptors import ErrorInterceptor
from tts.v1 import tts_pb2, tts_pb2_grpc


class RejectsConfig(tts_pb2_grpc.TextToSpeechServicer):
    async def StreamingSynthesize(self, request_iterator, context):
        await request_iterator.__anext__()
        raise InvalidArgument("config.speed", "5 is outside 0.5..2")
        yield  # pragma: no cover - makes this an async generator


@contextlib.asynccontextmanager
async def rejecting_gateway():
    """A loopback server behind the error interceptor whose servicer rejects every stream's config; yields a stub."""
    server = grpc.aio.server(interceptors=[ErrorInterceptor("gateway")])
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(RejectsConfig(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield tts_pb2_grpc.TextToSpeechStub(channel)
    finally:
        await server.stop(0)


async def test_early_rejection_keeps_its_status_while_the_client_still_writes():
    async with rejecting_gateway() as stub:

        async def requests():
            yield tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(speed=5))
            for _ in range(20):
                yield tts_pb2.StreamingSynthesizeRequest(text="你好" * 50)

        outcomes = []
        for _ in range(40):      # without draining, ~90 % of these came back INTERNAL on this machine
            try:
                async for _ in stub.StreamingSynthesize(requests()):
                    pass
            except grpc.RpcError as err:
                outcomes.append((err.code(), err.details()))
        assert outcomes == [(grpc.StatusCode.INVALID_ARGUMENT, "config.speed: 5 is outside 0.5..2")] * 40


async def test_early_rejection_reaches_a_paced_client_before_it_has_written_its_text():
    """A client streaming text at a chat model's pace (a piece every 50 ms) hears the rejection (a decoder at
    capacity, a quota) at once, not after it has sent everything: the drain stops at the first pause."""
    async with rejecting_gateway() as stub:
        written = []

        async def requests():
            yield tts_pb2.StreamingSynthesizeRequest(config=tts_pb2.SynthesisConfig(speed=5))
            for k in range(20):
                written.append(k)
                yield tts_pb2.StreamingSynthesizeRequest(text="你好")
                await asyncio.sleep(0.05)        # the client's pace (what is tested), not synchronisation

        with pytest.raises(grpc.RpcError) as err:
            async for _ in stub.StreamingSynthesize(requests()):
                pass
        sent_when_refused = len(written)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert sent_when_refused <= 5, f"the status came after {sent_when_refused} of 20 paced pieces"

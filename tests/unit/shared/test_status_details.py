"""INVALID_ARGUMENT carries its field as a google.rpc.BadRequest field violation in the status details (the readable
message stays), and a stage's field survives the gateway's mapping: a real grpc.aio server and client on loopback."""
import grpc
import pytest

from shared.errors import InvalidArgument, from_rpc_error as stage_error
from shared.interceptors import ErrorInterceptor
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client.errors import from_rpc_error as client_error


class Refuses(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, exc):
        self.exc = exc

    async def Synthesize(self, request, context):
        raise self.exc


async def failed_call(exc) -> grpc.aio.AioRpcError:
    server = grpc.aio.server(interceptors=[ErrorInterceptor("test")])
    tts_pb2_grpc.add_TextToSpeechServicer_to_server(Refuses(exc), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(tts_pb2.SynthesizeRequest(text="x"))
            return err.value
    finally:
        await server.stop(0)


async def test_the_client_reads_the_field_from_the_details():
    err = await failed_call(InvalidArgument("config.speed", "5 is outside 0.5..2.0"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == "config.speed: 5 is outside 0.5..2.0"
    assert client_error(err).field == "config.speed"


async def test_a_message_that_only_looks_like_a_field_names_none():
    err = await failed_call(InvalidArgument("", "speed: 5 is outside 0.5..2.0"))
    assert client_error(err).field == ""


async def test_a_stages_field_travels_on_through_the_gateway_mapping():
    mapped = stage_error("decoder", await failed_call(InvalidArgument("config.chunk_size", "-1 is outside 0..1000")))
    assert isinstance(mapped, InvalidArgument)
    assert (mapped.field, mapped.message) == ("config.chunk_size", "config.chunk_size: -1 is outside 0..1000")

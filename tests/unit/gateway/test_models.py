"""The models the gateway accepts are the engines its decoders report in Info (no list of names in the gateway)."""
import grpc
import pytest

from services.gateway.pipeline import Pipeline
from services.gateway.settings import GatewaySettings
from shared.errors import InvalidArgument
from tts.decoder.v1 import decoder_pb2


class FakeDecoder:
    def __init__(self, *names, default="", fail=False):
        self.names, self.default, self.fail, self.calls = names, default, fail, 0

    async def Info(self, request, timeout=None):
        self.calls += 1
        if self.fail:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "no decoder")
        return decoder_pb2.InfoResponse(engines=[decoder_pb2.EngineInfo(name=n) for n in self.names],
                                        default_engine=self.default)


class FakeStages:
    def __init__(self, decoder):
        self._decoder = decoder

    def decoder(self):
        return self._decoder


def pipeline(decoder, **settings) -> Pipeline:
    return Pipeline(GatewaySettings(**settings), FakeStages(decoder), voices=None)


async def test_models_are_the_decoders_engines_with_the_default():
    p = pipeline(FakeDecoder("embedded", "newengine", default="newengine"))
    assert await p.models() == (["embedded", "newengine"], "newengine")
    await p.check_model("newengine")          # an engine the gateway never heard of, served by the decoder
    await p.check_model("")
    with pytest.raises(InvalidArgument) as exc:
        await p.check_model("glmtts")         # not enabled on these decoders
    assert exc.value.field == "config.model" and "embedded, newengine" in str(exc.value)


async def test_the_gateway_default_model_wins_over_the_decoders():
    p = pipeline(FakeDecoder("embedded", "glmtts", default="embedded"), default_model="glmtts")
    assert (await p.models())[1] == "glmtts"


async def test_no_decoder_answering_leaves_the_check_to_the_decoder():
    decoder = FakeDecoder(fail=True)
    await pipeline(decoder).check_model("anything")
    assert decoder.calls == 1

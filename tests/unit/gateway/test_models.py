"""The models the gateway accepts are the engines its decoders report in Info (no list of names in the gateway)."""
import logging

import grpc
import pytest

from services.gateway import pipeline as pipeline_module

from services.gateway.pipeline import Pipeline
from services.gateway.settings import GatewaySettings
from shared.errors import InvalidArgument
from tts.decoder.v1 import decoder_pb2


class FakeDecoder:
    def __init__(self, *names, default="", fail=False, aliases=None):
        self.names, self.default, self.fail, self.calls = names, default, fail, 0
        self.aliases = aliases or {}

    async def Info(self, request, timeout=None):
        self.calls += 1
        if self.fail:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "no decoder")
        return decoder_pb2.InfoResponse(engines=[decoder_pb2.EngineInfo(name=n, aliases=self.aliases.get(n, []))
                                                 for n in self.names], default_engine=self.default)


class FakeStages:
    def __init__(self, decoder):
        self._decoder = decoder

    def decoder(self):
        return self._decoder


def pipeline(decoder, **settings) -> Pipeline:
    return Pipeline(GatewaySettings(**settings), FakeStages(decoder), voices=None)


async def test_models_are_the_decoders_engines_with_the_default():
    p = pipeline(FakeDecoder("kokoro", "newengine", default="newengine"))
    assert await p.models() == (["kokoro", "newengine"], "newengine")
    await p.check_model("newengine")          # an engine the gateway never heard of, served by the decoder
    await p.check_model("")
    with pytest.raises(InvalidArgument) as exc:
        await p.check_model("glmtts")         # not enabled on these decoders
    assert exc.value.field == "config.model" and "kokoro, newengine" in str(exc.value)


async def test_the_gateway_default_model_wins_over_the_decoders():
    p = pipeline(FakeDecoder("kokoro", "glmtts", default="kokoro"), default_model="glmtts")
    assert (await p.models())[1] == "glmtts"


async def test_no_decoder_answering_leaves_the_check_to_the_decoder():
    decoder = FakeDecoder(fail=True)
    await pipeline(decoder).check_model("anything")
    assert decoder.calls == 1


async def test_an_earlier_engine_name_is_the_name_now_with_one_warning(monkeypatch, caplog):
    """"embedded" (the kokoro engine's earlier name, listed in its EngineInfo.aliases) is accepted for one release:
    requests and batch jobs go to "kokoro"; ListVoices lists only the names now."""
    monkeypatch.setattr(pipeline_module, "_warned_aliases", set())
    p = pipeline(FakeDecoder("kokoro", "glmtts", default="kokoro", aliases={"kokoro": ["embedded"]}))
    with caplog.at_level(logging.WARNING, "gateway"):
        assert await p.check_model("embedded") == "kokoro"
        assert await p.check_model("embedded") == "kokoro"
        assert await p.check_model("glmtts") == "glmtts"
    assert [r.getMessage() for r in caplog.records] == [
        "model 'embedded' is deprecated: it is now 'kokoro' (the old name is accepted for one release)"]
    assert await p.models() == (["kokoro", "glmtts"], "kokoro")


async def test_a_plan_for_an_earlier_name_decodes_with_the_name_now():
    from tts.v1 import tts_pb2

    p = pipeline(FakeDecoder("kokoro", default="kokoro", aliases={"kokoro": ["embedded"]}))
    plan = await p.plan("t", tts_pb2.SynthesisConfig(model="embedded"), (), None)
    assert plan.engine == plan.decode_config.engine == "kokoro"
    p = pipeline(FakeDecoder("kokoro", default="kokoro", aliases={"kokoro": ["embedded"]}), default_model="embedded")
    plan = await p.plan("t", tts_pb2.SynthesisConfig(), (), None)
    assert plan.decode_config.engine == "kokoro" and (await p.models())[1] == "kokoro"

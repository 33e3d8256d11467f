"""What the gateway asks of the stages for the glmtts engine to match the published GLM-TTS inference (issue 12):
the speaker encoder the decoder engine's model needs (EngineInfo.speaker_encoder, e.g. a checkpoint's own CAM++
ONNX), for inline reference audio and registered voices; and the offline render for unary Synthesize and batch
lines."""
import asyncio

import pytest

from services.gateway.batch.lines import LineSpec
from services.gateway.batch.runner import Runner
from services.gateway.pipeline import Pipeline
from services.gateway.server import GatewayServicer
from services.gateway.settings import GatewaySettings
from services.gateway.voices import VoiceRecord, new_voice_id
from tts.decoder.v1 import decoder_pb2
from tts.speaker.v1 import speaker_pb2
from tts.v1 import tts_pb2

NEED = "campplus-onnx@0123456789abcdef"


class FakeSpeaker:
    def __init__(self):
        self.embeds, self.gets = [], []

    def _reply(self, encoder):
        name, _, version = (encoder or "campplus@v1").partition("@")
        return speaker_pb2.EmbedResponse(reference_id="r" * 64, encoder=name, encoder_version=version,
                                         embedding=[0.1] * 192, prompt_pcm16k=b"\0\0" * 1600)

    async def Embed(self, req, metadata=(), timeout=None):
        self.embeds.append(req.encoder)
        return self._reply(req.encoder)

    async def GetEmbedding(self, req, metadata=(), timeout=None):
        self.gets.append(req.encoder)
        return self._reply(req.encoder)


class FakeDecoder:
    async def Info(self, req, timeout=None):
        return decoder_pb2.InfoResponse(default_engine="kokoro", engines=[
            decoder_pb2.EngineInfo(name="kokoro"), decoder_pb2.EngineInfo(name="glmtts", speaker_encoder=NEED,
                                                            segment_min_units=30, segment_max_units=60)])


class FakeStages:
    def __init__(self):
        self.speaker = FakeSpeaker()
        self._decoder = FakeDecoder()

    def decoder(self):
        return self._decoder


class FakeVoices:
    def __init__(self, rec):
        self.rec = rec

    async def get(self, tenant, voice_id, with_audio=True):
        assert voice_id == self.rec.id
        return self.rec


def _pipeline(rec=None):
    return Pipeline(GatewaySettings(), FakeStages(), FakeVoices(rec))


def test_reference_audio_is_embedded_with_the_engines_encoder():
    async def go():
        p = _pipeline()
        plan = await p.plan("t", tts_pb2.SynthesisConfig(reference_audio=b"RIFF", model="glmtts"), (), None)
        assert p.stages.speaker.embeds == [NEED]
        assert plan.decode_config.speaker.encoder == NEED             # the id of the encoder that really ran
        # an engine that needs no particular encoder gets the speaker stage's default
        plan = await p.plan("t", tts_pb2.SynthesisConfig(reference_audio=b"RIFF", model="kokoro"), (), None)
        assert p.stages.speaker.embeds[-1] == "" and plan.decode_config.speaker.encoder == "campplus@v1"
    asyncio.run(go())


def test_registered_voice_is_sent_with_the_engines_encoder():
    rec = VoiceRecord(id=new_voice_id(), name="a", reference_id="r" * 64, encoder="campplus@v1", prompt_text="",
                      seconds=3.0, created_at="", audio=b"RIFF")

    async def go():
        p = _pipeline(rec)
        plan = await p.plan("t", tts_pb2.SynthesisConfig(voice=rec.id, model="glmtts"), (), None)
        assert plan.decode_config.speaker.encoder == NEED              # by reference: the decoder's cache key
        full = await plan.full_speaker()                               # the resend after NOT_FOUND
        assert p.stages.speaker.gets == [NEED] and full.encoder == NEED
        assert list(full.embedding) and full.reference_id == rec.reference_id
    asyncio.run(go())


class AddingVoices(FakeVoices):
    def __init__(self):
        super().__init__(None)

    async def add(self, tenant, name, reference_id, encoder, prompt_text, seconds, audio):
        self.rec = VoiceRecord(id=new_voice_id(), name=name, reference_id=reference_id, encoder=encoder,
                               prompt_text=prompt_text, seconds=seconds, created_at="", audio=audio)
        return self.rec


def test_a_registered_voice_keeps_the_version_of_its_encoder():
    """Stored as name@version, so without the decoder's Info the decoder still refuses an embedding from another
    version of the encoder (a bare name matches every version)."""
    voices = AddingVoices()
    servicer = GatewayServicer(GatewaySettings(), Pipeline(GatewaySettings(), FakeStages(), voices), _Auth())
    asyncio.run(servicer.RegisterVoice(tts_pb2.RegisterVoiceRequest(name="a", audio=b"RIFF"), _Context()))
    assert voices.rec.encoder == "campplus@v1"


# ------------------------------------------------------------------ unary Synthesize asks for the offline render

class _Planned(Exception):
    pass


class RecordingPipeline:
    def __init__(self):
        self.offline = []
        self.batch = []

    async def plan(self, tenant, cfg, metadata, deadline, *, offline=False, batch=False):
        self.offline.append(offline)
        self.batch.append(batch)
        raise _Planned


class _Auth:
    def tenant(self, metadata, peer=""):
        return "t"


class _Context:
    def invocation_metadata(self):
        return ()

    def peer(self):
        return "ipv4:127.0.0.1:5000"

    def time_remaining(self):
        return None


def test_unary_synthesize_plans_an_offline_render():
    """Unary Synthesize wants the whole audio: the decoder may render each segment whole (glmtts: the published
    offline full-attention flow), and the plan says so to the decoder and the frontend."""
    pipe = RecordingPipeline()
    servicer = GatewayServicer(GatewaySettings(), pipe, _Auth())
    with pytest.raises(_Planned):
        asyncio.run(servicer.Synthesize(tts_pb2.SynthesizeRequest(text="你好。"), _Context()))
    assert pipe.offline == [True]

    async def go():
        p = _pipeline()
        whole = await p.plan("t", tts_pb2.SynthesisConfig(model="glmtts"), (), None, offline=True)
        streamed = await p.plan("t", tts_pb2.SynthesisConfig(model="glmtts"), (), None)
        assert whole.decode_config.offline and whole.normalize_config.whole_text
        assert not streamed.decode_config.offline and not streamed.normalize_config.whole_text
        # the frontend merges segments into the range the engine's LM reads best (the published 30-60 units)
        for plan in (whole, streamed):
            assert (plan.normalize_config.merge_min_units, plan.normalize_config.merge_max_units) == (30, 60)
    asyncio.run(go())


def test_batch_lines_plan_an_offline_render(tmp_path):
    pipe = RecordingPipeline()
    runner = Runner(GatewaySettings(), pipe, store=None)
    with pytest.raises(_Planned):
        asyncio.run(runner._synthesize("t", "j_0123456789abcdef", tts_pb2.SynthesisConfig(), tmp_path,
                                       LineSpec(uttid="u1", syn_text="你好。"), 1))
    assert pipe.offline == [True] and pipe.batch == [True]     # batch priority: waits for spare capacity

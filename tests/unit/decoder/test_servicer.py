"""The decoder servicer against the engine contract: it reads what an engine is from the base classes (never
probing), fills EngineInfo's metadata, and accepts an engine's earlier name for one release."""
import asyncio
import logging

import numpy as np
import pytest

from services.decoder.engine import base
from services.decoder.engine.base import Chunk, Engine, Stream
from services.decoder.engine.section import EngineSettings
from services.decoder.server import DecoderServicer
from shared.errors import InvalidArgument
from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2


class PlainSettings(EngineSettings):
    aliases = ("oldname",)


class PlainStream(Stream):
    """A stream that says each segment as 10 samples: only what a stream must implement."""

    def __init__(self):
        self.fed, self.ended, self.done = [], False, asyncio.Event()

    def feed(self, segment):
        self.fed.append(segment)

    def end(self):
        self.ended = True
        self.done.set()

    async def chunks(self):
        await self.done.wait()
        for seg in self.fed:
            yield Chunk(np.zeros(10, np.float32), 16000, seg.index, tokens=1, segment_end=True)

    async def close(self):
        pass


class PlainEngine(Engine):
    """Only what an engine must say and do: everything else is the base class's."""

    name = "plain"
    sample_rate = 16000
    model_description = "a test model"
    languages = ("zh",)
    license = "CC0"

    def open_stream(self, voice, options):
        self.last = PlainStream()
        return self.last


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(base, "_warned", set())


async def requests(*items):
    for item in items:
        yield item


async def decode(servicer, engine_name):
    reqs = requests(decoder_pb2.DecodeRequest(config=decoder_pb2.DecodeConfig(engine=engine_name)),
                    decoder_pb2.DecodeRequest(segment=frontend_pb2.Segment(index=0, text="好", normalized="好")))
    return [r async for r in servicer.Decode(reqs, None)]


async def test_info_fills_the_metadata_and_the_defaults():
    servicer = DecoderServicer({"plain": PlainEngine(PlainSettings())}, "plain")
    (info,) = (await servicer.Info(decoder_pb2.InfoRequest(), None)).engines
    assert (info.name, info.sample_rate, info.model, list(info.languages), info.license) == (
        "plain", 16000, "a test model", ["zh"], "CC0")
    assert list(info.aliases) == ["oldname"]
    # the base class's defaults: no voices, no cloning, any speaker encoder, segments as the frontend cuts them
    assert (list(info.voices), info.supports_cloning, info.speaker_encoder) == ([], False, "")
    assert (info.segment_min_units, info.segment_max_units, info.active_streams) == (0, 0, 0)


async def test_the_summary_reads_the_stream_base_class():
    servicer = DecoderServicer({"plain": PlainEngine(PlainSettings())}, "plain")
    out = await decode(servicer, "plain")
    assert [r.WhichOneof("response") for r in out] == ["chunk", "summary"]
    assert (out[-1].summary.engine, out[-1].summary.voice, out[-1].summary.conditioning) == ("plain", "", "")


async def test_an_earlier_name_is_accepted_with_one_warning(caplog):
    engine = PlainEngine(PlainSettings())
    servicer = DecoderServicer({"plain": engine}, "plain")
    with caplog.at_level(logging.WARNING, "decoder"):
        for _ in range(2):
            out = await decode(servicer, "oldname")
            assert out[-1].summary.engine == "plain" and engine.last.ended
    warnings = [r.getMessage() for r in caplog.records if "oldname" in r.getMessage()]
    assert len(warnings) == 1 and "now 'plain'" in warnings[0]


async def test_an_unknown_engine_is_refused_naming_the_enabled_ones():
    servicer = DecoderServicer({"plain": PlainEngine(PlainSettings())}, "plain")
    with pytest.raises(InvalidArgument, match="unknown or disabled engine 'embedded'; enabled: plain"):
        await decode(servicer, "embedded")


def test_an_engine_or_stream_missing_its_part_cannot_be_made():
    class NoStream(Engine):
        name = "x"

    with pytest.raises(TypeError, match="open_stream"):
        NoStream(PlainSettings())

    class HalfStream(Stream):
        def feed(self, segment):
            pass

    with pytest.raises(TypeError, match="chunks"):
        HalfStream()

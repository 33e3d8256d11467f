"""The decoder's settings: one section per engine (its own env prefix), validated when read; the engine registry."""
import inspect

import pytest
from pydantic import ValidationError

from services.decoder.engine.registry import REGISTRY, build_engines
from services.decoder.settings import RENAMED, DecoderSettings, EngineSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("TTS_DECODER_"):
            monkeypatch.delenv(name)


def test_each_engine_reads_its_own_prefix(monkeypatch):
    monkeypatch.setenv("TTS_DECODER_GLMTTS_MAX_STREAMS", "3")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_IDLE_TTL_S", "7.5")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_DEVICE", "cpu")
    monkeypatch.setenv("TTS_DECODER_EMBEDDED_MAX_STREAMS", "5")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", "15, 25,50")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_LOOKAHEAD", "")
    s = DecoderSettings()
    assert (s.glmtts.max_streams, s.glmtts.idle_ttl_s, s.glmtts.device) == (3, 7.5, "cpu")
    assert s.embedded.max_streams == 5
    assert s.glmtts.chunk_schedule == (15, 25, 50)
    assert s.glmtts.lookahead == (0,)            # empty = no look-ahead
    # the sections are logged with the rest, nested
    dumped = s.model_dump()
    assert dumped["glmtts"]["max_streams"] == 3 and dumped["embedded"]["max_streams"] == 5


@pytest.mark.parametrize("env, value, message", [
    ("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", "15,x", "TTS_DECODER_GLMTTS_CHUNK_SCHEDULE='15,x'"),
    ("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", "15,0", "token counts >= 1"),
    ("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", ",", "at least one token count"),
    ("TTS_DECODER_GLMTTS_LOOKAHEAD", "12,-1", "TTS_DECODER_GLMTTS_LOOKAHEAD='12,-1'"),
    ("TTS_DECODER_GLMTTS_DTYPE", "int8", "bfloat16"),
    ("TTS_DECODER_GLMTTS_PHONEMES", "some", "official"),
    ("TTS_DECODER_GLMTTS_MAX_STREAMS", "0", "greater than 0"),
])
def test_bad_engine_settings_are_refused_with_the_variable(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=message):
        DecoderSettings()


def test_unknown_or_missing_engines_are_refused(monkeypatch):
    with pytest.raises(ValidationError, match="unknown engine nope; known: embedded, glmtts"):
        DecoderSettings(engines="embedded,nope")
    with pytest.raises(ValidationError, match="TTS_DECODER_DEFAULT_ENGINE='glmtts' is not among"):
        DecoderSettings(engines="embedded", default_engine="glmtts")


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_retired_name_stops_the_decoder_naming_the_new_one(monkeypatch, old):
    monkeypatch.setenv(old, "3")
    with pytest.raises(ValidationError, match=f"{old} \\(now {RENAMED[old]}\\)"):
        DecoderSettings()


def test_glmtts_dtypes_are_the_engines():
    from services.decoder.engine.glmtts.device import DTYPES
    from services.decoder.settings import GLMTTSSettings

    assert set(GLMTTSSettings.model_fields["dtype"].annotation.__args__) == {"auto", *DTYPES}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_engine_has_its_section_and_takes_its_settings(name):
    entry = REGISTRY[name]
    cls = entry.engine_class()
    assert cls.name == name
    assert DecoderSettings.model_fields[name].annotation is entry.settings
    assert issubclass(entry.settings, EngineSettings)
    assert entry.settings.model_config["env_prefix"] == f"TTS_DECODER_{name.upper()}_"
    # every constructor argument the section passes exists (a renamed parameter fails here, not at start-up)
    params = inspect.signature(cls).parameters
    assert set(entry.settings().engine_kwargs()) <= set(params)


def test_every_engine_section_is_registered():
    sections = {name for name, f in DecoderSettings.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, EngineSettings)}
    assert sections == set(REGISTRY)


def test_build_engines_constructs_the_enabled_ones_from_their_sections():
    from services.decoder.settings import EmbeddedSettings

    s = DecoderSettings(engines="embedded", embedded=EmbeddedSettings(max_streams=5, voice="jf_alpha"))
    engines = build_engines(s)
    assert list(engines) == ["embedded"]
    assert engines["embedded"].max_streams == 5 and engines["embedded"].default_voice == "jf_alpha"

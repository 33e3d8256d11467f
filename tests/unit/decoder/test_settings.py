"""The decoder's settings: one section per registered engine (its own env prefix, from the engine's folder),
validated when read; the engine registry; the engines' earlier names."""
import logging

import pytest
from pydantic import ValidationError

from services.decoder.engine import base
from services.decoder.engine.glmtts.settings import RENAMED, GLMTTSSettings
from services.decoder.engine.kokoro.settings import KokoroSettings
from services.decoder.engine.registry import REGISTRY, build_engines, earlier_names
from services.decoder.engine.section import EngineSettings
from services.decoder.settings import DecoderSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("TTS_DECODER_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(base, "_warned", set())        # each test sees its own first warning


def test_each_engine_reads_its_own_prefix(monkeypatch):
    monkeypatch.setenv("TTS_DECODER_GLMTTS_MAX_STREAMS", "3")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_IDLE_TTL_S", "7.5")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_DEVICE", "cpu")
    monkeypatch.setenv("TTS_DECODER_KOKORO_MAX_STREAMS", "5")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", "15, 25,50")
    monkeypatch.setenv("TTS_DECODER_GLMTTS_LOOKAHEAD", "")
    s = DecoderSettings()
    assert (s.glmtts.max_streams, s.glmtts.idle_ttl_s, s.glmtts.device) == (3, 7.5, "cpu")
    assert s.kokoro.max_streams == 5
    assert s.glmtts.chunk_schedule == (15, 25, 50)
    assert s.glmtts.lookahead == (0,)            # empty = no look-ahead
    # the sections are logged with the rest, nested
    dumped = s.model_dump()
    assert dumped["glmtts"]["max_streams"] == 3 and dumped["kokoro"]["max_streams"] == 5


@pytest.mark.parametrize("env, value, message", [
    ("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", "15,x", "TTS_DECODER_GLMTTS_CHUNK_SCHEDULE='15,x'"),
    ("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", "15,0", "token counts >= 1"),
    ("TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", ",", "at least one token count"),
    ("TTS_DECODER_GLMTTS_LOOKAHEAD", "12,-1", "TTS_DECODER_GLMTTS_LOOKAHEAD='12,-1'"),
    ("TTS_DECODER_GLMTTS_DTYPE", "int8", "bfloat16"),
    ("TTS_DECODER_GLMTTS_PHONEMES", "some", "official"),
    ("TTS_DECODER_GLMTTS_MAX_STREAMS", "0", "greater than 0"),
    ("TTS_DECODER_KOKORO_CHUNK_MS", "0", "greater than 0"),
])
def test_bad_engine_settings_are_refused_with_the_variable(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=message):
        DecoderSettings()


def test_unknown_or_missing_engines_are_refused(monkeypatch):
    with pytest.raises(ValidationError, match="unknown engine nope; known: kokoro, glmtts"):
        DecoderSettings(engines="kokoro,nope")
    with pytest.raises(ValidationError, match="TTS_DECODER_DEFAULT_ENGINE='glmtts' is not among"):
        DecoderSettings(engines="kokoro", default_engine="glmtts")


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_a_retired_name_stops_the_decoder_naming_the_new_one(monkeypatch, old):
    monkeypatch.setenv(old, "3")
    with pytest.raises(ValidationError, match=f"{old} \\(now {RENAMED[old]}\\)"):
        DecoderSettings()


def test_glmtts_dtypes_are_the_engines():
    from services.decoder.engine.glmtts.device import DTYPES

    assert set(GLMTTSSettings.model_fields["dtype"].annotation.__args__) == {"auto", *DTYPES}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_engine_has_its_section_and_takes_it_whole(name):
    entry = REGISTRY[name]
    cls = entry.engine_class()
    assert cls.name == name
    assert issubclass(cls, base.Engine) and issubclass(entry.settings, EngineSettings)
    assert DecoderSettings.model_fields[name].annotation is entry.settings      # the section comes from the registry
    assert entry.settings.model_config["env_prefix"] == f"TTS_DECODER_{name.upper()}_"
    assert cls.model_description and cls.languages and cls.license                         # what Info says about it
    # the section lives in the engine's own folder
    assert entry.settings.__module__.rsplit(".", 1)[0] == cls.__module__.rsplit(".", 1)[0]


def test_every_engine_section_is_registered():
    sections = {name for name, f in DecoderSettings.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, EngineSettings)}
    assert sections == set(REGISTRY)


def test_build_engines_constructs_the_enabled_ones_from_their_sections():
    section = KokoroSettings(max_streams=5, voice="jf_alpha")
    engines = build_engines(DecoderSettings(engines="kokoro", default_engine="kokoro", kokoro=section))
    assert list(engines) == ["kokoro"]
    assert engines["kokoro"].settings is section


# -- the earlier name of the kokoro engine, "embedded": accepted for one release --------------------------------------

def test_embedded_is_the_earlier_name_of_kokoro():
    assert earlier_names() == {"embedded": "kokoro"}


def test_embedded_in_the_engine_list_is_read_as_kokoro_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, "decoder"):
        s = DecoderSettings(engines="embedded,glmtts", default_engine="embedded")
        DecoderSettings(engines="embedded")
    assert (s.engines, s.default_engine, s.engine_names()) == ("kokoro,glmtts", "kokoro", ["kokoro", "glmtts"])
    warnings = [r.getMessage() for r in caplog.records if "earlier name" in r.getMessage()]
    assert len(warnings) == 2                   # once per setting, however often the settings are read
    assert "TTS_DECODER_ENGINES" in warnings[0] and "TTS_DECODER_DEFAULT_ENGINE" in warnings[1]


def test_embedded_env_names_are_read_as_the_kokoro_ones_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("TTS_DECODER_EMBEDDED_MAX_STREAMS", "7")
    monkeypatch.setenv("TTS_DECODER_EMBEDDED_VOICE", "jf_alpha")
    monkeypatch.setenv("TTS_DECODER_KOKORO_CHUNK_MS", "200")
    with caplog.at_level(logging.WARNING, "decoder"):
        s = DecoderSettings()
    assert (s.kokoro.max_streams, s.kokoro.voice, s.kokoro.chunk_ms) == (7, "jf_alpha", 200)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "TTS_DECODER_EMBEDDED_MAX_STREAMS is deprecated: it is now TTS_DECODER_KOKORO_MAX_STREAMS" in messages
    assert "TTS_DECODER_EMBEDDED_VOICE is deprecated" in messages


def test_an_old_and_a_new_name_of_one_setting_both_set_is_an_error(monkeypatch):
    monkeypatch.setenv("TTS_DECODER_EMBEDDED_MAX_STREAMS", "7")
    monkeypatch.setenv("TTS_DECODER_KOKORO_MAX_STREAMS", "8")
    with pytest.raises(ValidationError, match="TTS_DECODER_EMBEDDED_MAX_STREAMS and TTS_DECODER_KOKORO_MAX_STREAMS "
                                              "are both set"):
        DecoderSettings()


def test_a_fresh_install_speaks_mandarin_with_fastspeech2_and_one_setting_brings_kokoro_back(monkeypatch):
    s = DecoderSettings()
    assert s.default_engine == "fastspeech2" and s.engine_names() == ["fastspeech2", "kokoro"]
    monkeypatch.setenv("TTS_DECODER_DEFAULT_ENGINE", "kokoro")
    assert DecoderSettings().default_engine == "kokoro"

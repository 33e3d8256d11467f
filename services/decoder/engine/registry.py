"""Every decoder engine, in one place: its name → (engine class, settings section).

A new engine: write it (a class with the ``base.Engine`` interface, constructed from keyword arguments), give it a
settings section in ``settings.py`` (an ``EngineSettings`` subclass with env prefix ``TTS_DECODER_<NAME>_`` whose
``engine_kwargs()`` are the constructor's arguments, and a field of that name in ``DecoderSettings``), and add a line
here. ``TTS_DECODER_ENGINES`` then enables it; the gateway, the CLI and the web page learn its name from ``Info``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..settings import DecoderSettings, EmbeddedSettings, EngineSettings, FastSpeech2Settings, GLMTTSSettings


@dataclass(frozen=True)
class EngineEntry:
    engine: str                          # "module:Class", imported only when enabled (glmtts pulls in torch)
    settings: type[EngineSettings]

    def engine_class(self) -> type:
        module, _, name = self.engine.partition(":")
        return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, EngineEntry] = {
    "embedded": EngineEntry("services.decoder.engine.embedded:EmbeddedEngine", EmbeddedSettings),
    "glmtts": EngineEntry("services.decoder.engine.glmtts.engine:GLMTTSEngine", GLMTTSSettings),
    "fastspeech2": EngineEntry("services.decoder.engine.fastspeech2.engine:FastSpeech2Engine", FastSpeech2Settings),
}


def build_engines(settings: DecoderSettings) -> dict:
    """The enabled engines (``TTS_DECODER_ENGINES``; names checked by the settings), constructed, not yet warmed up."""
    return {name: REGISTRY[name].engine_class()(**settings.section(name).engine_kwargs())
            for name in settings.engine_names()}

"""Every decoder engine, in one place: its name → (engine class, settings section).

A new engine: its folder under ``engine/`` (a ``base.Engine`` subclass whose constructor takes its settings section
whole, and everything that knows its model), its settings section there (a ``section.EngineSettings`` subclass with
env prefix ``TTS_DECODER_<NAME>_``), and one line here. ``DecoderSettings`` gets the section from this table (a
field of the engine's name), ``TTS_DECODER_ENGINES`` then enables it; the gateway, the CLI and the web page learn its
name from ``Info``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .fastspeech2.settings import FastSpeech2Settings
from .glmtts.settings import GLMTTSSettings
from .kokoro.settings import KokoroSettings
from .section import EngineSettings


@dataclass(frozen=True)
class EngineEntry:
    engine: str                          # "module:Class", imported only when enabled (glmtts pulls in torch)
    settings: type[EngineSettings]

    def engine_class(self) -> type:
        module, _, name = self.engine.partition(":")
        return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, EngineEntry] = {
    "kokoro": EngineEntry("services.decoder.engine.kokoro.engine:KokoroEngine", KokoroSettings),
    "glmtts": EngineEntry("services.decoder.engine.glmtts.engine:GLMTTSEngine", GLMTTSSettings),
    "fastspeech2": EngineEntry("services.decoder.engine.fastspeech2.engine:FastSpeech2Engine", FastSpeech2Settings),
}


def earlier_names() -> dict[str, str]:
    """Earlier names of the registered engines (their sections' ``aliases``) → their names now."""
    return {alias: name for name, entry in REGISTRY.items() for alias in entry.settings.aliases}


def build_engines(settings) -> dict:
    """The enabled engines (``TTS_DECODER_ENGINES``; names checked by the settings), each constructed from its
    settings section, not yet warmed up."""
    return {name: REGISTRY[name].engine_class()(settings.section(name)) for name in settings.engine_names()}

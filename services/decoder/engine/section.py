"""The base of every engine's settings section (kept apart from services/decoder/settings.py, which gets the
sections from the registry: an engine folder's section imports this without importing the list)."""
from __future__ import annotations

import os
from typing import ClassVar

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .base import warn_once


class EngineSettings(BaseSettings):
    """One engine's settings section, in the engine's folder (``engine/<name>/settings.py``), env prefix
    ``TTS_DECODER_<NAME>_``; the engine's constructor takes it whole. ``DecoderSettings`` gets one per registered
    engine (registry.py), validated at start-up and logged once with the rest.

    ``aliases``: earlier names of the engine, still accepted for one release: a request's model, the names in
    ``TTS_DECODER_ENGINES``/``_DEFAULT_ENGINE``, and the env names ``TTS_DECODER_<ALIAS>_*`` (read as this section's,
    with a warning; the old and the new name of one setting both set is an error). ``retired``: env names of earlier
    releases that are refused at start-up, naming the new one (an unknown name would be ignored without a word)."""

    model_config = SettingsConfigDict(extra="ignore")
    aliases: ClassVar[tuple[str, ...]] = ()
    retired: ClassVar[dict[str, str]] = {}       # env names of earlier releases → their names now: refused

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, data):
        retired = [f"{old} (now {new})" for old, new in cls.retired.items() if old in os.environ]
        if retired:
            raise ValueError(f"renamed settings: {', '.join(retired)}")
        prefix = cls.model_config.get("env_prefix", "")
        if not cls.aliases or not prefix or not isinstance(data, dict):
            return data
        for alias in cls.aliases:
            old_prefix = f"TTS_DECODER_{alias.upper()}_"
            for name in cls.model_fields:
                old, new = f"{old_prefix}{name.upper()}", f"{prefix}{name.upper()}"
                if old not in os.environ:
                    continue
                if new in os.environ:
                    raise ValueError(f"{old} and {new} are both set: {old} is the earlier name of {new}; "
                                     f"keep only {new}")
                warn_once(old, f"{old} is deprecated: it is now {new} (the old name is read for one release)",
                          setting=new)
                data.setdefault(name, os.environ[old])
        return data

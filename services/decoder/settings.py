"""The decoder's settings: the service's own (``TTS_DECODER_*``) and one section per registered engine
(engine/registry.py), each from the engine's folder with its own env prefix (``TTS_DECODER_KOKORO_*``,
``TTS_DECODER_GLMTTS_*``), validated when read and logged once, nested under the engine's name."""
from __future__ import annotations

from pydantic import Field, create_model, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

from .engine.base import warn_once
from .engine.registry import REGISTRY, earlier_names
from .engine.section import EngineSettings

__all__ = ["DecoderSettings", "EngineSettings"]


class _DecoderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_", extra="ignore")

    port: int = 50054
    # comma-separated names from engine/registry.py; the default speaks Mandarin requests that name no engine
    # (TTS_DECODER_DEFAULT_ENGINE=kokoro makes Kokoro the default again; English goes to kokoro by its languages)
    engines: str = "fastspeech2,kokoro"
    default_engine: str = ""                # "" = the first of TTS_DECODER_ENGINES
    stream_idle_timeout_s: float = 60.0     # a Decode stream with no segment and no half-close this long is aborted

    @model_validator(mode="after")
    def _check(self):
        old = earlier_names()
        for env, value in (("TTS_DECODER_ENGINES", self.engines), ("TTS_DECODER_DEFAULT_ENGINE", self.default_engine)):
            for name in (e.strip() for e in value.split(",")):
                if name in old:
                    warn_once(f"{env}:{name}", f"{env} names {name!r}, the earlier name of engine {old[name]!r} "
                              "(accepted for one release)", engine=old[name])
        self.engines = ",".join(old.get(n, n) for n in self.engine_names())
        self.default_engine = old.get(self.default_engine.strip(), self.default_engine.strip())
        names = self.engine_names()
        if not self.default_engine and names:
            self.default_engine = names[0]
        unknown = [n for n in names if n not in REGISTRY]
        if unknown or not names:
            raise ValueError(f"TTS_DECODER_ENGINES={self.engines!r}: "
                             f"{'unknown engine ' + ', '.join(unknown) if unknown else 'no engine'}; "
                             f"known: {', '.join(REGISTRY)}")
        if self.default_engine not in names:
            raise ValueError(f"TTS_DECODER_DEFAULT_ENGINE={self.default_engine!r} is not among "
                             f"TTS_DECODER_ENGINES={self.engines!r}")
        return self

    def engine_names(self) -> list[str]:
        return [e.strip() for e in self.engines.split(",") if e.strip()]

    def section(self, name: str) -> EngineSettings:
        """The settings section of engine ``name``."""
        return getattr(self, name)


# one field per registered engine, named as the engine, holding its section (read from its own env prefix)
DecoderSettings = create_model(
    "DecoderSettings", __base__=_DecoderSettings, __module__=__name__,
    **{name: (entry.settings, Field(default_factory=entry.settings)) for name, entry in REGISTRY.items()})

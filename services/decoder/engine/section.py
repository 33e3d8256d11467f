"""The base of every engine's settings section (kept apart from services/decoder/settings.py, which lists the
sections: an engine folder's section imports this without importing the list)."""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """One engine's section; ``engine_kwargs()`` gives its engine class's constructor arguments."""

    model_config = SettingsConfigDict(extra="ignore")

    def engine_kwargs(self) -> dict:
        raise NotImplementedError

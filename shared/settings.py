"""Settings base: one pydantic-settings object per service, read from env vars (prefix TTS_<STAGE>_).

A service's settings may group fields in nested sections (a ``BaseSettings`` field with its own env prefix, built
from the environment when the service's object is); secrets are ``SecretStr`` fields, masked wherever the object is
printed or logged. ``log_once`` logs the whole object, sections included, at start.
"""
from __future__ import annotations

import json
import logging

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

INTERNAL_TOKEN_ENV = "TTS_INTERNAL_TOKEN"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0          # 0 = no Prometheus endpoint
    log_level: str = "INFO"
    grace_seconds: float = 10.0    # SIGTERM: NOT_SERVING, then drain in-flight RPCs this long
    max_message_mb: int = 16
    # the shared secret between the gateway and its stages (shared/internal_auth.py); "" = off. One env var for
    # every service, whatever its prefix
    internal_token: SecretStr = Field(SecretStr(""), validation_alias=INTERNAL_TOKEN_ENV)

    def log_once(self, logger: logging.Logger) -> None:
        logger.info("settings", extra={"settings": json.loads(self.model_dump_json())})


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    """Every env var ``settings_cls`` reads, its nested sections' included (deploy manifests are checked against
    this: pydantic-settings ignores an unknown name silently)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    out = set()
    for name, field in settings_cls.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            out |= env_names(kind)
        elif isinstance(field.validation_alias, str):
            out.add(field.validation_alias)
        else:
            out.add((prefix + name).upper())
    return out

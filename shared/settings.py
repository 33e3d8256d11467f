"""Settings base: one pydantic-settings object per service, read from env vars (prefix TTS_<STAGE>_)."""
from __future__ import annotations

import json
import logging

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0          # 0 = no Prometheus endpoint
    log_level: str = "INFO"
    grace_seconds: float = 10.0    # SIGTERM: NOT_SERVING, then drain in-flight RPCs this long
    max_message_mb: int = 16

    def log_once(self, logger: logging.Logger) -> None:
        logger.info("settings", extra={"settings": json.loads(self.model_dump_json())})

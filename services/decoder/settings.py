"""The decoder's settings: the service's own (``TTS_DECODER_*``) and one section per engine, each with its own env
prefix (``TTS_DECODER_EMBEDDED_*``, ``TTS_DECODER_GLMTTS_*``), validated when read and logged once, nested."""
from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import ServiceSettings

from .engine.fastspeech2.settings import FastSpeech2Settings
from .engine.section import EngineSettings

# names of earlier releases: refused at start-up (an unknown TTS_DECODER_* name would be ignored without a word)
RENAMED = {f"TTS_DECODER_{old}": f"TTS_DECODER_GLMTTS_{old}"
           for old in ("MAX_STREAMS", "MAX_TOKENS_PER_STREAM", "CACHE_BUDGET_BYTES", "IDLE_TTL_S", "DEVICE", "DTYPE")}


class EmbeddedSettings(EngineSettings):
    """Kokoro-82M on onnxruntime (engine/embedded.py)."""

    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_EMBEDDED_", extra="ignore")

    model_dir: str = "models/kokoro"
    voice: str = "jm_kumo"
    chunk_ms: int = Field(320, gt=0)
    max_streams: int = Field(64, gt=0)
    queue_chunks: int = Field(16, gt=0)     # audio chunks a stream may run ahead of its reader (back-pressure)
    target_utilization: float = Field(0.85, ge=0)  # admit a stream while all streams need at most this share of the
                                            # measured throughput (real-time capacity); 0 = off (only max_streams)
    min_streams: int = Field(1, ge=0)       # always admit this many streams, whatever the measured throughput
    admission_idle_s: float = 5.0           # an open stream that got no text for this long needs no capacity

    def engine_kwargs(self) -> dict:
        return dict(model_dir=self.model_dir, default_voice=self.voice, max_streams=self.max_streams,
                    chunk_ms=self.chunk_ms, queue_chunks=self.queue_chunks,
                    target_utilization=self.target_utilization, min_streams=self.min_streams,
                    admission_idle_s=self.admission_idle_s)


def _token_counts(value, env: str, example: str, minimum: int) -> tuple[int, ...]:
    """"15,25,50" (or a sequence) → (15, 25, 50), each at least ``minimum``."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        counts = tuple(int(p) for p in parts if str(p).strip())
    except ValueError:
        counts = None
    if counts is None or (counts and min(counts) < minimum):
        raise ValueError(f"{env}={value!r}: expected token counts >= {minimum} such as {example}")
    return counts


class GLMTTSSettings(EngineSettings):
    """The GLM-TTS speech LM + flow + vocoder on torch (engine/glmtts/)."""

    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_GLMTTS_", extra="ignore")

    path: str = "models/glmtts-tiny"
    device: str = "auto"                    # "cpu", "cuda", "cuda:1", "auto"
    # LM + flow: "auto" (bf16 on a GPU, fp32 on CPU); the names of glmtts.device.DTYPES
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_streams: int = Field(8, gt=0)
    max_tokens_per_stream: int = Field(4096, gt=0)
    cache_budget_bytes: int = Field(0, ge=0)    # 0 = derive from max_streams x max_tokens_per_stream
    idle_ttl_s: float = 60.0                # an idle stream's KV cache is freed after this long
    # speech tokens per flow block / audio chunk (last repeats)
    chunk_schedule: Annotated[tuple[int, ...], NoDecode] = (8, 16, 32, 50)
    # streaming: tokens of right context each flow block waits for (per block, last repeats; quality vs latency).
    # 8,12,16,25 with the 8,16,32,50 blocks: the first chunk is due at 16 tokens (27 with 15,25,50 + 12,25,50) and
    # the mel stays within 0.088 of the offline render at every block end on the reference pack (0.465 without)
    lookahead: Annotated[tuple[int, ...], NoDecode] = (8, 12, 16, 25)
    n_timesteps: int = Field(10, gt=0)      # flow-matching Euler steps
    top_k: int = 25
    top_p: float = 0.8
    temperature: float = 1.0
    min_token_ratio: float = 2.0            # speech tokens per text token, lower and upper bound
    max_token_ratio: float = 20.0
    max_ahead: int = Field(4, gt=0)         # audio chunks a stream may run ahead of its reader
    trust_remote_code: bool = False         # the published tokenizer ships custom code: set true for it
    # id of the speaker encoder the flow was trained with; "" = the checkpoint's frontend/campplus.onnx
    # (campplus-onnx@{sha256}) when present, else any
    speaker_encoder: str = ""
    # the published phoneme rule (lm_text.py; alias "polyphones"), or "off"
    phonemes: Literal["official", "polyphones", "off"] = "official"
    threads: int = Field(0, ge=0)           # torch CPU threads; 0 = half the cores (two worker threads share them)

    @field_validator("chunk_schedule", mode="before")
    @classmethod
    def _schedule(cls, value):
        counts = _token_counts(value, "TTS_DECODER_GLMTTS_CHUNK_SCHEDULE", "8,16,32,50", 1)
        if not counts:
            raise ValueError(f"TTS_DECODER_GLMTTS_CHUNK_SCHEDULE={value!r}: give at least one token count")
        return counts

    @field_validator("lookahead", mode="before")
    @classmethod
    def _lookahead(cls, value):
        return _token_counts(value, "TTS_DECODER_GLMTTS_LOOKAHEAD", "8,12,16,25", 0) or (0,)

    def engine_kwargs(self) -> dict:
        from .engine.glmtts.lm import SamplingParams

        return dict(path=self.path, device=self.device, dtype=self.dtype, max_streams=self.max_streams,
                    max_tokens_per_stream=self.max_tokens_per_stream, cache_budget_bytes=self.cache_budget_bytes,
                    idle_ttl_s=self.idle_ttl_s, chunk_schedule=self.chunk_schedule, lookahead=self.lookahead,
                    n_timesteps=self.n_timesteps,
                    sampling=SamplingParams(top_k=self.top_k, top_p=self.top_p, temperature=self.temperature),
                    min_token_ratio=self.min_token_ratio, max_token_ratio=self.max_token_ratio,
                    max_ahead=self.max_ahead, trust_remote_code=self.trust_remote_code, threads=self.threads,
                    phonemes=self.phonemes, speaker_encoder=self.speaker_encoder)




class DecoderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_", extra="ignore")

    port: int = 50054
    engines: str = "embedded"               # comma-separated names from engine/registry.py
    default_engine: str = "embedded"
    stream_idle_timeout_s: float = 60.0     # a Decode stream with no segment and no half-close this long is aborted
    # one section per engine in engine/registry.py, under the field of the engine's name
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    glmtts: GLMTTSSettings = Field(default_factory=GLMTTSSettings)
    fastspeech2: FastSpeech2Settings = Field(default_factory=FastSpeech2Settings)

    @model_validator(mode="after")
    def _check(self):
        from .engine.registry import REGISTRY

        retired = [f"{old} (now {new})" for old, new in RENAMED.items() if old in os.environ]
        if retired:
            raise ValueError(f"renamed settings: {', '.join(retired)}")
        names = self.engine_names()
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

"""The glmtts engine's settings section: ``TTS_DECODER_GLMTTS_*``. The names of earlier releases in ``RENAMED``
(``TTS_DECODER_MAX_STREAMS`` …) are refused at start-up, naming the new one."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from ..section import EngineSettings

# names of earlier releases: refused at start-up (an unknown TTS_DECODER_* name would be ignored without a word)
RENAMED: dict[str, str] = {f"TTS_DECODER_{old}": f"TTS_DECODER_GLMTTS_{old}"
           for old in ("MAX_STREAMS", "MAX_TOKENS_PER_STREAM", "CACHE_BUDGET_BYTES", "IDLE_TTL_S", "DEVICE", "DTYPE")}


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
    retired: ClassVar[dict[str, str]] = RENAMED

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

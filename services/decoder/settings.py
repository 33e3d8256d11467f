from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class DecoderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_", extra="ignore")

    port: int = 50054
    engines: str = "embedded"               # comma-separated: "embedded", "glmtts"
    default_engine: str = "embedded"
    device: str = "auto"                    # glmtts: "cpu", "cuda", "auto"
    # embedded (Kokoro-82M)
    embedded_model_dir: str = "models/kokoro"
    embedded_voice: str = "jm_kumo"
    embedded_chunk_ms: int = 320
    embedded_max_streams: int = 64
    # glmtts
    glmtts_path: str = "models/glmtts-tiny"
    max_streams: int = 8
    max_tokens_per_stream: int = 4096
    cache_budget_bytes: int = 0             # 0 = derive from max_streams x max_tokens_per_stream
    idle_ttl_s: float = 60.0
    stream_idle_timeout_s: float = 60.0     # a Decode stream with no segment and no half-close this long is aborted

    def engine_names(self) -> list[str]:
        return [e.strip() for e in self.engines.split(",") if e.strip()]

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class DecoderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_DECODER_", extra="ignore")

    port: int = 50054
    engines: str = "embedded"               # comma-separated: "embedded", "glmtts"
    default_engine: str = "embedded"
    device: str = "auto"                    # glmtts: "cpu", "cuda", "auto"
    dtype: str = "auto"                     # glmtts LM + flow: "auto" (bf16 on a GPU, fp32 on CPU), "bfloat16", ...
    # embedded (Kokoro-82M)
    embedded_model_dir: str = "models/kokoro"
    embedded_voice: str = "jm_kumo"
    embedded_chunk_ms: int = 320
    embedded_max_streams: int = 64
    embedded_queue_chunks: int = 16         # audio chunks a stream may run ahead of its reader (back-pressure)
    # glmtts
    glmtts_path: str = "models/glmtts-tiny"
    max_streams: int = 8
    max_tokens_per_stream: int = 4096
    cache_budget_bytes: int = 0             # 0 = derive from max_streams x max_tokens_per_stream
    idle_ttl_s: float = 60.0                # an idle glmtts stream's KV cache is freed after this long
    glmtts_chunk_schedule: str = "15,25,50"  # speech tokens per audio chunk: first, second, ... (last repeats)
    glmtts_lookahead: int = 0               # tokens of right context a flow block waits for (quality vs latency)
    glmtts_n_timesteps: int = 10            # flow-matching Euler steps
    glmtts_top_k: int = 25
    glmtts_top_p: float = 0.8
    glmtts_temperature: float = 1.0
    glmtts_min_token_ratio: float = 2.0     # speech tokens per text token, lower and upper bound
    glmtts_max_token_ratio: float = 20.0
    glmtts_max_ahead: int = 4               # audio chunks a stream may run ahead of its reader
    glmtts_trust_remote_code: bool = False  # the published tokenizer ships custom code: set true for it
    glmtts_phonemes: str = "polyphones"     # "polyphones": ambiguous characters go to the LM as the chosen pinyin; "off"
    glmtts_threads: int = 0                 # torch CPU threads; 0 = half the cores (two worker threads share them)
    stream_idle_timeout_s: float = 60.0     # a Decode stream with no segment and no half-close this long is aborted

    def engine_names(self) -> list[str]:
        return [e.strip() for e in self.engines.split(",") if e.strip()]

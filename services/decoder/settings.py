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
    embedded_target_utilization: float = 0.85  # admit a stream while all streams need at most this share of the
                                            # measured throughput (real-time capacity); 0 = off (only max_streams)
    embedded_min_streams: int = 1           # always admit this many streams, whatever the measured throughput
    embedded_admission_idle_s: float = 5.0  # an open stream that got no text for this long needs no capacity
    # glmtts
    glmtts_path: str = "models/glmtts-tiny"
    max_streams: int = 8
    max_tokens_per_stream: int = 4096
    cache_budget_bytes: int = 0             # 0 = derive from max_streams x max_tokens_per_stream
    idle_ttl_s: float = 60.0                # an idle glmtts stream's KV cache is freed after this long
    glmtts_chunk_schedule: str = "8,16,32,50"  # speech tokens per flow block / audio chunk (last repeats)
    # streaming: tokens of right context each flow block waits for (per block, last repeats; quality vs latency).
    # 8,12,16,25 with the 8,16,32,50 blocks: the first chunk is due at 16 tokens (27 with 15,25,50 + 12,25,50) and
    # the mel stays within 0.088 of the offline render at every block end on the reference pack (0.465 without)
    glmtts_lookahead: str = "8,12,16,25"
    glmtts_n_timesteps: int = 10            # flow-matching Euler steps
    glmtts_top_k: int = 25
    glmtts_top_p: float = 0.8
    glmtts_temperature: float = 1.0
    glmtts_min_token_ratio: float = 2.0     # speech tokens per text token, lower and upper bound
    glmtts_max_token_ratio: float = 20.0
    glmtts_max_ahead: int = 4               # audio chunks a stream may run ahead of its reader
    glmtts_trust_remote_code: bool = False  # the published tokenizer ships custom code: set true for it
    # id of the speaker encoder the glmtts flow was trained with; "" = the checkpoint's frontend/campplus.onnx
    # (campplus-onnx@{sha256}) when present, else any
    glmtts_speaker_encoder: str = ""
    glmtts_phonemes: str = "official"       # the published phoneme rule (lm_text.py; alias "polyphones"); "off"
    glmtts_threads: int = 0                 # torch CPU threads; 0 = half the cores (two worker threads share them)
    stream_idle_timeout_s: float = 60.0     # a Decode stream with no segment and no half-close this long is aborted

    def engine_names(self) -> list[str]:
        return [e.strip() for e in self.engines.split(",") if e.strip()]

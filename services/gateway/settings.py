from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_", extra="ignore")

    port: int = 50051
    frontend_addr: str = "127.0.0.1:50052"
    speaker_addr: str = "127.0.0.1:50053"
    decoder_addrs: str = "127.0.0.1:50054"       # comma-separated; requests are spread round-robin
    # the durable store (voices, batch jobs, quota counters): a noeviction Redis, never the embedding cache's
    redis_url: str = "redis://127.0.0.1:6380/0"
    redis_timeout_ms: int = 200
    redis_max_connections: int = 256             # per pool (voices, batch); a call waits for a free one

    # auth: a file of "tenant sha256(token)" lines; empty = auth off, every caller is tenant "default"
    tokens_file: str = ""
    admin_tenants: str = ""                      # comma-separated tenants allowed the admin RPCs (auth off: everyone)
    default_model: str = ""                      # "" = the decoder's default engine
    cloning_model: str = "glmtts"                # engine used for cloned voices when the request names none
    default_sample_rate: int = 24000
    max_text_chars: int = 20000                  # per request, all pieces together
    max_reference_bytes: int = 10 * 1024 * 1024
    stream_idle_timeout_s: float = 60.0          # no message from the client this long → stream ended with an error
    max_stream_seconds: float = 600.0
    stage_queue: int = 16                        # bounded queues between stages (back-pressure)
    # batch jobs (SubmitBatch …): server paths (JSONL files, prompt_speech audio) must lie inside the tenant's own
    # folder <batch_input_dir>/<tenant>/
    batch_input_dir: str = ""                    # "" = server paths refused (upload only)
    batch_output_dir: str = "outputs/batch"      # <dir>/<tenant>/<job>/<uttid>.wav + results.jsonl
    batch_concurrency: int = 2                   # lines synthesized at once, all jobs of this gateway together
    batch_max_lines: int = 10000
    batch_max_bytes: int = 8 * 1024 * 1024
    batch_max_jobs_per_tenant: int = 8           # unfinished jobs at once (0 = no limit) → RESOURCE_EXHAUSTED
    batch_line_timeout_s: float = 120.0
    batch_line_retries: int = 3                  # a line failing with UNAVAILABLE/DEADLINE_EXCEEDED is retried
    batch_lease_s: float = 10.0                  # a crashed gateway's jobs are resumed by a gateway after this
    batch_retention_hours: float = 168.0         # then a finished job's records and files are deleted
    batch_watch_poll_s: float = 0.5

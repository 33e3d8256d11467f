"""The gateway's settings: one object, ``GatewaySettings``, with a nested section per concern.

Every field is read from its env var as before (the sections keep the flat names: ``TTS_GATEWAY_BATCH_CONCURRENCY``
is ``settings.batch.concurrency``, ``TTS_GATEWAY_RATE_PER_TENANT`` is ``settings.limits.rate_per_tenant``); the whole
object is logged once at start, secrets masked.
"""
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import limits
from shared.settings import ServiceSettings


class BatchSettings(BaseSettings):
    """Batch jobs (SubmitBatch …), ``TTS_GATEWAY_BATCH_*``. Server paths (JSONL files, prompt_speech audio) must lie
    inside the tenant's own folder ``<input_dir>/<tenant>/``."""

    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_BATCH_", extra="ignore")

    input_dir: str = ""                    # "" = server paths refused (upload only)
    output_dir: str = "outputs/batch"      # <dir>/<tenant>/<job>/<uttid>.wav + results.jsonl
    concurrency: int = 2                   # lines synthesized at once, all jobs of this gateway together
    max_lines: int = 10000
    max_bytes: int = 8 * 1024 * 1024
    max_jobs_per_tenant: int = 8           # unfinished jobs at once (0 = no limit) → RESOURCE_EXHAUSTED
    line_timeout_s: float = 120.0
    line_retries: int = 3                  # a line failing with UNAVAILABLE/DEADLINE_EXCEEDED is retried
    lease_s: float = 10.0                  # a crashed gateway's jobs are resumed by a gateway after this
    retention_hours: float = 168.0         # then a finished job's records and files are deleted
    watch_poll_s: float = 0.5


class LimitSettings(BaseSettings):
    """Per-tenant rate and concurrent streams (limits.py), ``TTS_GATEWAY_*_PER_TENANT``. 0 turns a limit off."""

    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_", extra="ignore")

    max_streams_per_tenant: int = 16       # concurrent StreamingSynthesize + Synthesize + WatchBatch calls
    rate_per_tenant: float = 50.0          # RPCs per second, sustained
    burst_per_tenant: float = 100.0        # RPCs allowed at once after an idle period (bucket size)
    stream_retry_after_s: float = 1.0      # retry hint when the concurrent-stream limit is hit


class QuotaSettings(BaseSettings):
    """Per-tenant quotas in the durable store (quotas.py), ``TTS_GATEWAY_MAX_*_PER_TENANT``. 0 turns a quota off."""

    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_", extra="ignore")

    max_voices_per_tenant: int = 50                         # registered voices
    max_voice_bytes_per_tenant: int = 64 * 1024 * 1024      # their stored prompt audio + records
    max_jobs_per_tenant: int = 100                          # batch jobs kept (finished ones until deleted or expired)
    max_job_bytes_per_tenant: int = 64 * 1024 * 1024        # JSONL of those jobs, stored in Redis
    max_output_bytes_per_tenant: int = 2 * 1024 * 1024 * 1024   # batch WAV files on the gateway's disk
    quota_retry_after_s: float = 30.0                       # retry hint (a quota frees only when something is deleted)


class AuthSettings(BaseSettings):
    """Tenant bearer tokens (auth.py), stored hashed; auth is on when either source is set, else every caller is
    tenant "default"."""

    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_", extra="ignore")

    tokens_file: str = ""                  # a file of "tenant sha256(token)" lines
    tokens: SecretStr = SecretStr("")      # "tenant:sha256hex,tenant2:sha256hex" (a k8s Secret as an env var)
    admin_tenants: str = ""                # comma-separated tenants allowed the admin RPCs (auth off: everyone)
    # failed authentications (auth.py AuthThrottle): over one of these within the window, a client address (or a
    # token prefix) is refused with RESOURCE_EXHAUSTED + RetryInfo until its window ends, before its token is checked
    auth_failures_per_client: int = 20     # per client address (IPv6: per /64); 0 = off
    auth_failures_per_prefix: int = 100    # per first auth_prefix_chars characters of the token; 0 = off
    auth_prefix_chars: int = 8
    auth_failure_window_s: float = 60.0
    auth_throttle_entries: int = 100_000   # addresses and prefixes tracked at once (oldest windows dropped first)
    # a throttled refusal is answered after this long (≤ the retry delay), at most auth_throttle_held_per_client calls
    # of one client and auth_throttle_held in all at once (beyond them: at once): a client that ignores the retry
    # delay and calls back to back makes ~1 call per hold instead of thousands a second
    auth_throttle_hold_s: float = 1.0
    auth_throttle_held_per_client: int = 32
    auth_throttle_held: int = 1024
    # comma-separated addresses / CIDRs (the web process) whose x-forwarded-for names the client for the throttle
    trusted_proxies: str = ""

    def admins(self) -> set[str]:
        return {t.strip() for t in self.admin_tenants.split(",") if t.strip()}


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_", extra="ignore")

    port: int = 50051
    frontend_addr: str = "127.0.0.1:50052"
    speaker_addr: str = "127.0.0.1:50053"
    decoder_addrs: str = "127.0.0.1:50054"       # comma-separated; requests are spread round-robin

    @field_validator("decoder_addrs")
    @classmethod
    def _some_decoder(cls, value: str) -> str:
        if not any(a.strip() for a in value.split(",")):
            raise ValueError("TTS_GATEWAY_DECODER_ADDRS is empty: give at least one decoder address (host:port)")
        return value
    # the durable store (voices, batch jobs, quota counters): a noeviction Redis, never the embedding cache's
    redis_url: str = "redis://127.0.0.1:6380/0"
    redis_timeout_ms: int = 200
    redis_max_connections: int = 256             # per pool (voices, batch); a call waits for a free one

    default_model: str = ""                      # "" = the decoder's default engine
    cloning_model: str = "glmtts"                # engine used for cloned voices when the request names none
    default_sample_rate: int = 24000
    max_text_chars: int = limits.MAX_TEXT_CHARS  # per request, all pieces together
    max_reference_bytes: int = limits.MAX_REFERENCE_BYTES
    # no message from the client this long → stream ended with an error
    stream_idle_timeout_s: float = limits.STREAM_IDLE_TIMEOUT_S
    max_stream_seconds: float = 600.0
    stage_queue: int = 16                        # bounded queues between stages (back-pressure)

    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)

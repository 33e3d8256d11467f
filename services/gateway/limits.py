"""Per-tenant limits: concurrent streams and a request rate (token bucket).

Both answer RESOURCE_EXHAUSTED (``shared.errors.ResourceExhausted``) with a retry delay, which the error interceptor
turns into a ``google.rpc.RetryInfo`` in ``grpc-status-details-bin`` and a ``retry-after-ms`` trailer.

- rate: every RPC takes one token from the tenant's bucket (``rate_per_tenant`` tokens/s, up to
  ``burst_per_tenant`` saved up). An empty bucket → retry after the time until the next token.
- streams: ``StreamingSynthesize``, ``Synthesize`` and ``WatchBatch`` hold one slot for their whole life; the slot
  is released in ``finally`` (normal end, error, client cancel, deadline). The default (16) is well below one
  decoder pod's capacity (64 kokoro streams), so one tenant cannot take a pod's every slot; and a stream holds a
  decoder slot only from its first segment on (the gateway opens the decoder call lazily), so idle streams that
  never sent a complete sentence hold none.

The numbers are ``GatewaySettings.limits`` (``TTS_GATEWAY_MAX_STREAMS_PER_TENANT``, ``TTS_GATEWAY_RATE_PER_TENANT``,
``TTS_GATEWAY_BURST_PER_TENANT``; 0 turns a limit off). Limits are per gateway process: with N gateway replicas a
tenant gets up to N times those numbers. Size them as "per replica" (the HPA's minReplicas gives the floor).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from shared.errors import ResourceExhausted

from .settings import LimitSettings


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TenantLimits:
    """Thread-unsafe by design: used from the gateway's single asyncio loop."""

    def __init__(self, settings: LimitSettings | None = None, clock: Callable[[], float] = time.monotonic):
        self.settings = settings or LimitSettings()
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._active: dict[str, int] = {}

    # ---- rate ----------------------------------------------------------------------------------------------------
    @property
    def _burst(self) -> float:
        return max(self.settings.burst_per_tenant, 1.0)

    def check_rate(self, tenant: str) -> None:
        """Take one token for ``tenant`` or raise ResourceExhausted with the wait until the next one."""
        rate = self.settings.rate_per_tenant
        if rate <= 0:
            return
        now = self.clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(self._burst, now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + max(now - bucket.stamp, 0.0) * rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / rate
        raise ResourceExhausted(
            f"tenant {tenant!r} is over its rate limit of {rate:g} requests/s (burst {self._burst:g}); "
            f"retry in {wait:.3f} s", retry_after_s=wait)

    # ---- concurrent streams --------------------------------------------------------------------------------------
    def active(self, tenant: str) -> int:
        return self._active.get(tenant, 0)

    def acquire(self, tenant: str) -> None:
        limit = self.settings.max_streams_per_tenant
        current = self._active.get(tenant, 0)
        if limit > 0 and current >= limit:
            raise ResourceExhausted(
                f"tenant {tenant!r} already has {current} streams open (limit {limit}); "
                "finish or cancel one, or retry later", retry_after_s=self.settings.stream_retry_after_s)
        self._active[tenant] = current + 1

    def release(self, tenant: str) -> None:
        left = self._active.get(tenant, 0) - 1
        if left > 0:
            self._active[tenant] = left
        else:
            self._active.pop(tenant, None)

    def stream(self, tenant: str) -> "_StreamSlot":
        """``async with limits.stream(tenant):`` (or plain ``with``) holds one slot; raises when none is free."""
        return _StreamSlot(self, tenant)


class _StreamSlot:
    def __init__(self, limits: TenantLimits, tenant: str):
        self.limits = limits
        self.tenant = tenant

    def __enter__(self):
        self.limits.acquire(self.tenant)
        return self

    def __exit__(self, *exc):
        self.limits.release(self.tenant)   # always: normal end, error, CancelledError, GeneratorExit
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, *exc):
        return self.__exit__(*exc)

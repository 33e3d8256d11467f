"""Per-tenant quotas kept in the durable Redis store, so they hold across every gateway replica.

One hash per tenant, ``tts:quota:v1:{tenant}``, holds the tenant's usage counters (fields below). Every write that
grows a tenant's usage checks and increments its counters in the same Lua script that writes the data (a batch job's
bytes are counted by that script from what it writes), so two replicas can never both take the last unit. Deletes give the units back in their own script (flagged ``allow-oom`` so that a tenant can
always free space, even in a full store).

A tenant over a quota gets RESOURCE_EXHAUSTED naming the quota and its setting; the store itself never fills up as
long as its ``maxmemory`` covers the tenants' quotas (docs/deploying.md, "Redis roles"), so one tenant can never make
another tenant's writes fail. The limits are ``GatewaySettings.quotas``; 0 turns a quota off.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from shared.errors import ResourceExhausted, Unavailable

from .settings import QuotaSettings


@dataclass(frozen=True)
class Quota:
    """One counter of a tenant's hash and where its limit comes from: a ``QuotaSettings`` field (``attr``) or, with
    ``setting``, a limit the owner passes in (``Quotas(extra=...)``). A new quota = one line here + its settings field
    + a ``reserve``/``release`` where the thing is made and deleted."""

    field: str          # counter in the tenant's hash
    unit: str
    attr: str = ""      # the QuotaSettings field with its limit
    setting: str = ""   # the env var naming the limit, when it is not a QuotaSettings field

    @property
    def env(self) -> str:
        return self.setting or f"{QuotaSettings.model_config['env_prefix']}{self.attr.upper()}"


VOICES = Quota("voices", "voices", attr="max_voices_per_tenant")
VOICE_BYTES = Quota("voice_bytes", "bytes", attr="max_voice_bytes_per_tenant")
JOBS = Quota("jobs", "jobs", attr="max_jobs_per_tenant")
UNFINISHED_JOBS = Quota("unfinished_jobs", "unfinished jobs", setting="TTS_GATEWAY_BATCH_MAX_JOBS_PER_TENANT")
JOB_BYTES = Quota("job_bytes", "bytes", attr="max_job_bytes_per_tenant")
OUTPUT_BYTES = Quota("output_bytes", "bytes", attr="max_output_bytes_per_tenant")
BY_FIELD = {q.field: q for q in (VOICES, VOICE_BYTES, JOBS, UNFINISHED_JOBS, JOB_BYTES, OUTPUT_BYTES)}

# reserve(key, ARGV, at): ARGV[at] = n, then n (field, delta, limit) triples. Returns "field current asked" for the
# first counter that would pass its limit (nothing changed), or false after incrementing them all.
# take(key, field, delta, limit): one counter whose delta the script itself computed (the bytes it is about to write):
# the same answer.
RESERVE_LUA = """
local function over(qkey, f, d, lim)
  if lim > 0 and d > 0 then
    local cur = tonumber(redis.call('HGET', qkey, f) or '0')
    if cur + d > lim then return f .. ' ' .. cur .. ' ' .. d end
  end
  return false
end
local function reserve(qkey, argv, at)
  local n = tonumber(argv[at])
  for i = 0, n - 1 do
    local refused = over(qkey, argv[at + 1 + 3 * i], tonumber(argv[at + 2 + 3 * i]), tonumber(argv[at + 3 + 3 * i]))
    if refused then return refused end
  end
  for i = 0, n - 1 do
    redis.call('HINCRBY', qkey, argv[at + 1 + 3 * i], argv[at + 2 + 3 * i])
  end
  return false
end
local function take(qkey, f, d, lim)
  local refused = over(qkey, f, d, lim)
  if refused then return refused end
  if d ~= 0 then redis.call('HINCRBY', qkey, f, d) end
  return false
end
"""
# give(key, field, amount): decrement, never below 0
GIVE_LUA = """
local function give(qkey, f, d)
  d = tonumber(d or '0') or 0
  if d <= 0 then return end
  local left = tonumber(redis.call('HINCRBY', qkey, f, -d))
  if left < 0 then redis.call('HSET', qkey, f, 0) end
end
"""

def quota_key(tenant: str) -> str:
    return f"tts:quota:v1:{tenant}"


class Quotas:
    """Builds the quota part of the scripts' arguments and turns a refusal into RESOURCE_EXHAUSTED."""

    def __init__(self, settings: QuotaSettings | None = None, unfinished_jobs: int = 0):
        """``unfinished_jobs``: the batch section's limit (a quota whose setting lives there)."""
        self.settings = settings or QuotaSettings()
        s = self.settings
        given = {UNFINISHED_JOBS.field: unfinished_jobs}
        self.limits = {q.field: getattr(s, q.attr) if q.attr else given[q.field] for q in BY_FIELD.values()}

    def args(self, **deltas: int) -> list:
        """``[n, field, delta, limit, ...]`` for RESERVE_LUA."""
        out: list = [len(deltas)]
        for f, d in deltas.items():
            out += [f, int(d), self.limits[f]]
        return out

    def refused(self, tenant: str, result, deltas: dict) -> None:
        """Raise ResourceExhausted if a script answered with a refusal (``b"field current asked"``)."""
        if not result:
            return
        f, cur, asked = ((result.decode() if isinstance(result, bytes) else str(result)).split(" ") + [""])[:3]
        q = BY_FIELD[f]
        limit = self.limits[f]
        raise ResourceExhausted(
            f"tenant {tenant!r} is over its quota of {limit} {q.unit} ({q.field}: {cur} used, "
            f"{asked or deltas.get(f, 0)} more asked; the limit is {limit} per tenant, {q.env}); delete some first",
            retry_after_s=self.settings.quota_retry_after_s)


class StoreUnavailable(Unavailable):
    """The durable store did not answer (UNAVAILABLE naming redis); worth waiting for, unlike a bad command."""

    def __init__(self, what: str, exc: BaseException):
        super().__init__("redis", f"{what} unreachable ({type(exc).__name__})")


class StoreFull(ResourceExhausted):
    """The durable store refused a write: it is at its maxmemory (noeviction)."""

    def __init__(self, what: str):
        super().__init__(f"the {what} is full (Redis maxmemory); this write was refused, nothing was evicted",
                         retry_after_s=30.0)


def store_client(url: str, timeout_s: float, connect_timeout_s: float, max_connections: int) -> aioredis.Redis:
    """A client of the durable store. A pooled connection the server closed (it restarted) is tried again at once
    on a fresh one (redis-py's ``from_url`` retries nothing unless told), so the first call after a restart does not
    fail; the scripts that create something are safe to run twice (they check what they would create)."""
    return aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout_s,
                             max_connections=max_connections,     # no timeouts retried: a slow store is not waited on
                             retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 2, (rx.ConnectionError,)))


# what a store call raises while the store is away or full: a caller that can wait (the batch runner) waits
STORE_TROUBLE = (StoreUnavailable, StoreFull, rx.ConnectionError, rx.TimeoutError, rx.OutOfMemoryError)


async def call(coro, what: str = "durable store"):
    """Redis errors → UNAVAILABLE naming the store; a full store (noeviction) → RESOURCE_EXHAUSTED for the writer."""
    try:
        return await coro
    except rx.OutOfMemoryError:
        raise StoreFull(what) from None
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        raise StoreUnavailable(what, exc) from None
    except rx.RedisError as exc:
        raise Unavailable("redis", f"{what} answered an error ({type(exc).__name__})") from None

"""The batch job store: the Redis schema of batch jobs, its Lua scripts and every read and write of it.

Redis, for job ``J`` of tenant ``T`` (``P`` = ``tts:job:v1:{T}:{J}``):

- ``P``            hash: id, tenant, name, state, total, done, failed, audio_s, config (SynthesisConfig bytes),
                   output_dir, created_at, updated_at, finished_at, bytes (what the job keeps in the store, as
                   counted against the quota), out_bytes (its WAVs on disk)
- ``P:lines``      list: ``b"<line number>\\t<raw JSONL line>"`` per non-blank line (index = line index)
- ``P:uttids``     hash: uttid → line index (uttids that parsed at submit)
- ``P:results``    hash: line index → result JSON; written once per line, so a finished line is never redone
- ``P:attempts``   hash: line index → times its synthesis was started
- ``P:events``     list: line indexes in the order they finished (WatchBatch reads it from an offset)
- ``P:lease``      string: the gateway process running the job (PX lease, renewed while it runs)

Everything a job keeps in the store is counted against its tenant's ``job_bytes`` quota by the script that writes it
(``_CREATE``, ``_FINISH_LINE``), kept in the job's ``bytes`` field and given back when the job is deleted (``_DELETE``,
also at expiry): the bytes written plus Redis's own overhead per key and per entry (``KEY_COST`` …, measured). At
submit a job pays for its record, its lines and uttids, its entries in the shared lists and, per line, a result record
of up to ``RECORD_ALLOWANCE`` bytes, its attempts counter and its event; a bigger result record pays the rest when it
is written, and if the quota cannot take it the line is recorded as failed (a record that fits the allowance).

``tts:jobs:v1:active`` (hash job → tenant) lists unfinished jobs: every gateway scans it and takes over jobs whose
lease has lapsed (after a crash, within ``batch.lease_s``). ``tts:jobs:v1:{T}`` (zset by creation time) lists a
tenant's jobs. A finished job goes into ``tts:jobs:v1:expiry`` (zset ``tenant\tjob`` by the time it is due); every
gateway's scan deletes due jobs (records and files) after ``batch.retention_hours``, as ``DeleteBatch`` does at once.

Calls here let Redis errors through as they are (the runner waits while the store is away: ``Runner._store``); the
RPC side wraps them with ``guarded`` (UNAVAILABLE / RESOURCE_EXHAUSTED naming the store).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time

from tts.v1 import tts_pb2

from ..quotas import GIVE_LUA, JOB_BYTES, RESERVE_LUA, Quotas, quota_key, store_client
from ..quotas import call as quota_call
from ..settings import GatewaySettings
from .lines import tenant_dir

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
TERMINAL = (DONE, CANCELLED, FAILED)
STATE_PB = {QUEUED: tts_pb2.BATCH_QUEUED, RUNNING: tts_pb2.BATCH_RUNNING, DONE: tts_pb2.BATCH_DONE,
            CANCELLED: tts_pb2.BATCH_CANCELLED, FAILED: tts_pb2.BATCH_FAILED}
LINE_PB = {"pending": tts_pb2.BATCH_LINE_PENDING, "done": tts_pb2.BATCH_LINE_DONE,
           "failed": tts_pb2.BATCH_LINE_FAILED}
JOB_ID_RE = re.compile(r"b_[0-9a-f]{32}")
ACTIVE = "tts:jobs:v1:active"
EXPIRY = "tts:jobs:v1:expiry"
PARTS = ("lines", "uttids", "results", "attempts", "events", "lease")

# What a job keeps in the store, per key and per entry, beyond the bytes of names and values (Redis 7.0 MEMORY USAGE,
# every element counted: a hash field in a hashtable ≤ 85 bytes, a zset member ≤ 111, a list item ≤ 41, a string key
# ~80): rounded up, so the quota bounds what the store really holds.
KEY_COST, ENTRY_COST, ITEM_COST = 160, 128, 48
RECORD_ALLOWANCE = 384      # result bytes per line paid at submit; any failure record the runner writes fits in it
_SIZES = f"""
local KEY, ENTRY, ITEM, RECORD = {KEY_COST}, {ENTRY_COST}, {ITEM_COST}, {RECORD_ALLOWANCE}
local function entry(f, v) return ENTRY + #tostring(f) + #tostring(v) end
"""
# a new job and its quota, at once (run twice, the second does nothing). KEYS: job, lines, uttids, index, active,
# quota. ARGV: job id, tenant, score, job_bytes limit, quota args (n, triples), then n record pairs, n lines, n uttid
# pairs.
_CREATE = RESERVE_LUA + _SIZES + """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local job, tenant = ARGV[1], ARGV[2]
local at = 5 + 1 + 3 * tonumber(ARGV[5])
local nrec = tonumber(ARGV[at]); local rec0 = at + 1; at = rec0 + 2 * nrec
local nlines = tonumber(ARGV[at]); local line0 = at + 1; at = line0 + nlines
local nutt = tonumber(ARGV[at]); local utt0 = at + 1
local part = KEY + #KEYS[1] + 9            -- a key named after the job (":results" …)
local bytes = KEY + #KEYS[1] + entry('bytes', '000000000000') + 4 * part + 16       -- 4: lines results attempts events
bytes = bytes + part + 32                   -- the lease (its owner) while the job runs
bytes = bytes + entry(job, '') + entry(job, tenant) + entry(tenant .. '\t' .. job, '')   -- index, active, expiry
for i = 0, nrec - 1 do bytes = bytes + entry(ARGV[rec0 + 2 * i], ARGV[rec0 + 2 * i + 1]) end
for i = 0, nlines - 1 do
  local idx = tostring(i)
  bytes = bytes + ITEM + #ARGV[line0 + i]                                   -- the line
  bytes = bytes + entry(idx, '') + RECORD + entry(idx, '0000') + ITEM + #idx  -- its result, attempts, event
end
if nutt > 0 then bytes = bytes + part end
for i = 0, nutt - 1 do bytes = bytes + entry(ARGV[utt0 + 2 * i], ARGV[utt0 + 2 * i + 1]) end
local refused = over(KEYS[6], 'job_bytes', bytes, tonumber(ARGV[4])) or reserve(KEYS[6], ARGV, 5)
if refused then return refused end
redis.call('HINCRBY', KEYS[6], 'job_bytes', bytes)
for i = 0, nrec - 1, 200 do
  redis.call('HSET', KEYS[1], unpack(ARGV, rec0 + 2 * i, rec0 + 2 * math.min(i + 199, nrec - 1) + 1))
end
redis.call('HSET', KEYS[1], 'bytes', bytes)
for i = 0, nlines - 1, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, line0 + i, line0 + math.min(i + 999, nlines - 1)))
end
for i = 0, nutt - 1, 500 do
  redis.call('HSET', KEYS[3], unpack(ARGV, utt0 + 2 * i, utt0 + 2 * math.min(i + 499, nutt - 1) + 1))
end
redis.call('ZADD', KEYS[4], ARGV[3], job)
redis.call('HSET', KEYS[5], job, tenant)
return false
"""
# one line finished: record it once; count it; append to the event list. A record over RECORD_ALLOWANCE pays the
# rest; refused by the quota, the fallback record (a failure that fits the allowance) is written instead.
# KEYS: job, results, events, quota. ARGV: index, record, status, audio seconds, now, fallback, job_bytes limit.
# Returns 0 (no such job, or the line was recorded already), 1 (recorded) or 2 (the fallback was recorded).
_FINISH_LINE = RESERVE_LUA + _SIZES + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local rec, status, audio, answer = ARGV[2], ARGV[3], ARGV[4], 1
local extra = #rec - RECORD
if extra > 0 and take(KEYS[4], 'job_bytes', extra, tonumber(ARGV[7])) then
  rec, status, audio, answer = ARGV[6], 'failed', 0, 2
  extra = #rec - RECORD
  if extra > 0 then redis.call('HINCRBY', KEYS[4], 'job_bytes', extra) end
end
if extra > 0 then redis.call('HINCRBY', KEYS[1], 'bytes', extra) end
redis.call('HSET', KEYS[2], ARGV[1], rec)
redis.call('HINCRBY', KEYS[1], status, 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'audio_s', audio)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
redis.call('RPUSH', KEYS[3], ARGV[1])
return answer
"""
# state transition if the current state is one of ARGV[4..]; -1: no such job
_SET_STATE = """
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return -1 end
for i = 4, #ARGV do
  if s == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
    if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'finished_at', ARGV[2]) end
    return 1
  end
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# the job ended. KEYS: active, quota, expiry, job. ARGV: job id, expiry member, due time
_RETIRE = "#!lua flags=allow-oom\n" + GIVE_LUA + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then give(KEYS[2], 'unfinished_jobs', 1) end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2]) end
return 1
"""
# delete a job. KEYS: job, its parts (6), index, active, quota, expiry. ARGV: job id, expiry member.
# Returns {1 if the job existed, output bytes it had}
_DELETE = "#!lua flags=allow-oom\n" + GIVE_LUA + """
local bytes = redis.call('HGET', KEYS[1], 'bytes')
local out = redis.call('HGET', KEYS[1], 'out_bytes')
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[8], ARGV[1])
redis.call('ZREM', KEYS[11], ARGV[2])
if redis.call('HDEL', KEYS[9], ARGV[1]) == 1 then give(KEYS[10], 'unfinished_jobs', 1) end
if n == 1 then
  give(KEYS[10], 'jobs', 1)
  give(KEYS[10], 'job_bytes', bytes)
  give(KEYS[10], 'output_bytes', out)
end
return {n, tonumber(out or '0')}
"""
# give back a WAV's bytes (its line was recorded as failed after all). KEYS: job, quota. ARGV: bytes
_RELEASE_OUTPUT = "#!lua flags=allow-oom\n" + GIVE_LUA + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'out_bytes', -tonumber(ARGV[1]))
give(KEYS[2], 'output_bytes', ARGV[1])
return 1
"""
# reserve a WAV's bytes before writing it. KEYS: job, quota. ARGV: quota triples (output_bytes only)
_RESERVE_OUTPUT = RESERVE_LUA + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local refused = reserve(KEYS[2], ARGV, 1)
if refused then return refused end
redis.call('HINCRBY', KEYS[1], 'out_bytes', ARGV[3])
return false
"""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


async def guarded(coro):
    """A store call made for an RPC: Redis trouble becomes UNAVAILABLE (full: RESOURCE_EXHAUSTED)."""
    return await quota_call(coro, "batch job store")


def split_item(item: bytes) -> tuple[int, bytes]:
    """An item of ``P:lines`` → (line number, raw JSONL line)."""
    lineno, _, raw = item.partition(b"\t")
    return int(lineno), raw


def line_result(rec: dict, index: int, attempts: int = 0) -> tts_pb2.BatchLineResult:
    return tts_pb2.BatchLineResult(
        line=rec.get("line", 0), uttid=rec.get("uttid", ""), state=LINE_PB.get(rec.get("status"), 0),
        error=rec.get("error", ""), normalized_text=rec.get("normalized_text", ""),
        phonemes=rec.get("phonemes", ""), duration_s=rec.get("duration_s", 0.0),
        real_time_factor=rec.get("rtf", 0.0), attempts=attempts)


def job_pb(meta: dict) -> tts_pb2.BatchJob:
    s = lambda k: meta.get(k, b"").decode()  # noqa: E731
    out_dir = f"{tenant_dir(s('tenant'))}/{s('id')}"       # relative: no server path leaves the gateway
    return tts_pb2.BatchJob(
        id=s("id"), name=s("name"), state=STATE_PB.get(s("state"), 0), total=int(meta.get("total", 0)),
        done=int(meta.get("done", 0)), failed=int(meta.get("failed", 0)), created_at=s("created_at"),
        updated_at=s("updated_at"), finished_at=s("finished_at"), output_dir=out_dir,
        audio_seconds=round(float(meta.get("audio_s", 0) or 0), 3))


class JobStore:
    def __init__(self, settings: GatewaySettings):
        timeout = max(settings.redis_timeout_ms / 1000, 1.0)
        self.redis = store_client(settings.redis_url, timeout * 5, timeout, settings.redis_max_connections)
        self.quotas = Quotas(settings.quotas, unfinished_jobs=settings.batch.max_jobs_per_tenant)
        self._create = self.redis.register_script(_CREATE)
        self._finish_line = self.redis.register_script(_FINISH_LINE)
        self._release_output = self.redis.register_script(_RELEASE_OUTPUT)
        self._set_state = self.redis.register_script(_SET_STATE)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._retire = self.redis.register_script(_RETIRE)
        self._delete = self.redis.register_script(_DELETE)
        self._reserve_output = self.redis.register_script(_RESERVE_OUTPUT)

    @staticmethod
    def key(tenant: str, job_id: str, part: str = "") -> str:
        return f"tts:job:v1:{tenant}:{job_id}" + (f":{part}" if part else "")

    @staticmethod
    def index_key(tenant: str) -> str:
        return f"tts:jobs:v1:{tenant}"

    async def close(self) -> None:
        await self.redis.aclose()

    # ---- a job's record ----------------------------------------------------------------------------------------
    async def create(self, tenant: str, job_id: str, record: dict, lines: list[tuple[int, bytes]],
                     uttids: dict[str, int], quota_args: list):
        """Writes the job with its quota (``quota_args`` and the job_bytes the script counts) in one script: None,
        or the quota's refusal (nothing written)."""
        flat_record = [x for kv in record.items() for x in kv]
        items = [f"{n}\t".encode() + raw for n, raw in lines]
        flat_uttids = [x for kv in uttids.items() for x in kv]
        return await self._create(
            keys=[self.key(tenant, job_id), self.key(tenant, job_id, "lines"), self.key(tenant, job_id, "uttids"),
                  self.index_key(tenant), ACTIVE, quota_key(tenant)],
            args=[job_id, tenant, time.time(), self.quotas.limits[JOB_BYTES.field], *quota_args,
                  len(record), *flat_record, len(items), *items, len(uttids), *flat_uttids])

    async def meta(self, tenant: str, job_id: str) -> dict:
        """The job's hash, keys decoded ({} when there is none)."""
        raw = await self.redis.hgetall(self.key(tenant, job_id))
        return {k.decode(): v for k, v in raw.items()}

    async def state(self, tenant: str, job_id: str) -> str:
        return (await self.redis.hget(self.key(tenant, job_id), "state") or b"").decode()

    async def set_state(self, tenant: str, job_id: str, state: str, final: bool, *if_in: str) -> int:
        """1: changed; 0: the state was not one of ``if_in``; -1: no such job."""
        return await self._set_state(keys=[self.key(tenant, job_id)], args=[state, now(), "1" if final else "0",
                                                                            *if_in])

    async def job_ids(self, tenant: str, limit: int) -> list[str]:
        return [i.decode() for i in await self.redis.zrevrange(self.index_key(tenant), 0, limit - 1)]

    async def unindex(self, tenant: str, job_id: str) -> None:
        await self.redis.zrem(self.index_key(tenant), job_id)

    # ---- lines and their results -------------------------------------------------------------------------------
    async def lines(self, tenant: str, job_id: str) -> list[bytes]:
        return await self.redis.lrange(self.key(tenant, job_id, "lines"), 0, -1)

    async def results(self, tenant: str, job_id: str) -> dict[int, dict]:
        raw = await self.redis.hgetall(self.key(tenant, job_id, "results"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    async def finished(self, tenant: str, job_id: str) -> set[int]:
        return {int(k) for k in await self.redis.hkeys(self.key(tenant, job_id, "results"))}

    async def attempts(self, tenant: str, job_id: str) -> dict[int, int]:
        raw = await self.redis.hgetall(self.key(tenant, job_id, "attempts"))
        return {int(k): int(v) for k, v in raw.items()}

    async def attempt(self, tenant: str, job_id: str, idx: int) -> None:
        await self.redis.hincrby(self.key(tenant, job_id, "attempts"), idx, 1)

    async def line_of(self, tenant: str, job_id: str, uttid: str) -> int | None:
        idx = await self.redis.hget(self.key(tenant, job_id, "uttids"), uttid) if uttid else None
        return None if idx is None else int(idx)

    async def result(self, tenant: str, job_id: str, idx: int) -> tuple[dict | None, int]:
        """(the line's result or None, its attempts)."""
        rec = await self.redis.hget(self.key(tenant, job_id, "results"), idx)
        attempts = await self.redis.hget(self.key(tenant, job_id, "attempts"), idx)
        return (json.loads(rec) if rec else None), int(attempts or 0)

    async def finish_line(self, tenant: str, job_id: str, idx: int, rec: dict, fallback: dict) -> int:
        """Records a finished line once: 0 (already recorded, or no such job), 1 (recorded) or 2 (the quota could
        not take ``rec``, so ``fallback`` was recorded: a failure that fits RECORD_ALLOWANCE)."""
        return await self._finish_line(
            keys=[self.key(tenant, job_id), self.key(tenant, job_id, "results"), self.key(tenant, job_id, "events"),
                  quota_key(tenant)],
            args=[idx, json.dumps(rec, ensure_ascii=False), "done" if rec["status"] == "done" else "failed",
                  rec.get("duration_s", 0.0), now(), json.dumps(fallback, ensure_ascii=False),
                  self.quotas.limits[JOB_BYTES.field]])

    async def event_count(self, tenant: str, job_id: str) -> int:
        return await self.redis.llen(self.key(tenant, job_id, "events"))

    async def finished_since(self, tenant: str, job_id: str, offset: int) -> list[tts_pb2.BatchLineResult]:
        """The lines finished after the first ``offset`` events, in the order they finished."""
        new = await self.redis.lrange(self.key(tenant, job_id, "events"), offset, -1)
        if not new:
            return []
        recs = await self.redis.hmget(self.key(tenant, job_id, "results"), new)
        attempts = await self.redis.hmget(self.key(tenant, job_id, "attempts"), new)
        return [line_result(json.loads(rec), int(idx), int(att or 0))
                for idx, rec, att in zip(new, recs, attempts) if rec]

    # ---- output quota, leases, retirement ----------------------------------------------------------------------
    async def reserve_output(self, tenant: str, job_id: str, quota_args: list):
        """b"gone" when the job was deleted; else the quota script's answer (None: reserved)."""
        return await self._reserve_output(keys=[self.key(tenant, job_id), quota_key(tenant)], args=quota_args)

    async def release_output(self, tenant: str, job_id: str, size: int) -> None:
        await self._release_output(keys=[self.key(tenant, job_id), quota_key(tenant)], args=[size])

    async def active(self) -> dict[str, str]:
        return {j.decode(): t.decode() for j, t in (await self.redis.hgetall(ACTIVE)).items()}

    async def take_lease(self, tenant: str, job_id: str, owner: str, lease_ms: int) -> bool:
        return bool(await self.redis.set(self.key(tenant, job_id, "lease"), owner, nx=True, px=lease_ms))

    async def renew_lease(self, tenant: str, job_id: str, owner: str, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[self.key(tenant, job_id, "lease")], args=[owner, lease_ms]))

    async def release_lease(self, tenant: str, job_id: str, owner: str) -> None:
        await self._release(keys=[self.key(tenant, job_id, "lease")], args=[owner])

    async def retire(self, tenant: str, job_id: str, due: float) -> None:
        await self._retire(keys=[ACTIVE, quota_key(tenant), EXPIRY, self.key(tenant, job_id)],
                           args=[job_id, f"{tenant}\t{job_id}", due])

    async def delete(self, tenant: str, job_id: str) -> tuple[bool, int]:
        """(whether the job existed, the output bytes it had); its quota is given back."""
        keys = [self.key(tenant, job_id), *(self.key(tenant, job_id, p) for p in PARTS), self.index_key(tenant),
                ACTIVE, quota_key(tenant), EXPIRY]
        existed, out_bytes = await self._delete(keys=keys, args=[job_id, f"{tenant}\t{job_id}"])
        return bool(existed), int(out_bytes or 0)

    async def due(self) -> list[tuple[str, str]]:
        """(tenant, job id) of finished jobs past their retention (at most 50); malformed entries are dropped."""
        out = []
        for member in await self.redis.zrangebyscore(EXPIRY, "-inf", time.time(), start=0, num=50):
            tenant, _, job_id = member.decode().rpartition("\t")
            if JOB_ID_RE.fullmatch(job_id):
                out.append((tenant, job_id))
            else:
                await self.redis.zrem(EXPIRY, member)
        return out

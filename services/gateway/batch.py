"""Batch jobs: a JSONL file of utterances, synthesized asynchronously in the gateway through the same ``Pipeline``
as ``Synthesize``, with bounded concurrency, persisted in Redis so that a restarted gateway resumes them.

Redis, for job ``J`` of tenant ``T`` (``P`` = ``tts:job:v1:{T}:{J}``):

- ``P``            hash: id, tenant, name, state, total, done, failed, audio_s, config (SynthesisConfig bytes),
                   output_dir, created_at, updated_at, finished_at
- ``P:lines``      list: ``b"<line number>\\t<raw JSONL line>"`` per non-blank line (index = line index)
- ``P:uttids``     hash: uttid → line index (uttids that parsed at submit)
- ``P:results``    hash: line index → result JSON; written once per line (HSETNX), so a finished line is never redone
- ``P:attempts``   hash: line index → times its synthesis was started
- ``P:events``     list: line indexes in the order they finished (WatchBatch reads it from an offset)
- ``P:lease``      string: the gateway process running the job (PX lease, renewed while it runs)

``tts:jobs:v1:active`` (hash job → tenant) lists unfinished jobs: every gateway scans it and takes over jobs whose
lease has lapsed (after a crash, within ``batch_lease_s``). ``tts:jobs:v1:{T}`` (zset by creation time) lists a
tenant's jobs. A finished job goes into ``tts:jobs:v1:expiry`` (zset ``tenant\tjob`` by the time it is due); every
gateway's scan deletes due jobs (records and files) after ``batch_retention_hours``, as ``DeleteBatch`` does at once.

Quotas (``quotas.py``, one counter hash per tenant in the same store, so they hold across replicas): jobs kept,
unfinished jobs, bytes of JSONL stored and bytes of output files on disk. Submit reserves the first three; each WAV
reserves its size before it is written (over the quota, the line fails naming it); a delete gives everything back.

Output: ``<batch_output_dir>/<tenant>/<job>/<uttid>.wav`` (written to a temp name, then renamed, before the line is
recorded as done) and ``results.jsonl`` (every line, in line order) when the job ends.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.audio import SUPPORTED_OUTPUT_RATES, wav_header
from prometheus_client import Counter, Gauge

from shared.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, TTSError, Unavailable
from shared.logging import tenant_var
from tts.v1 import tts_pb2

from .pipeline import Pipeline
from .quotas import call as quota_call
from .quotas import (GIVE_LUA, JOB_BYTES, JOBS, OUTPUT_BYTES, RESERVE_LUA, UNFINISHED_JOBS, QuotaSettings, Quotas,
                     quota_key)
from .settings import GatewaySettings
from .validate import MAX_SEED, check_text, has_speakable, validate_config
from .voices import is_registered

log = logging.getLogger("gateway.batch")

BATCH_LINES = Counter("tts_gateway_batch_lines_total", "Batch lines finished by this gateway", ["outcome"])
BATCH_RUNNING = Gauge("tts_gateway_batch_jobs_running", "Batch jobs this gateway is running")

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
TERMINAL = (DONE, CANCELLED, FAILED)
STATE_PB = {QUEUED: tts_pb2.BATCH_QUEUED, RUNNING: tts_pb2.BATCH_RUNNING, DONE: tts_pb2.BATCH_DONE,
            CANCELLED: tts_pb2.BATCH_CANCELLED, FAILED: tts_pb2.BATCH_FAILED}
LINE_PB = {"pending": tts_pb2.BATCH_LINE_PENDING, "done": tts_pb2.BATCH_LINE_DONE,
           "failed": tts_pb2.BATCH_LINE_FAILED}
UTTID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
JOB_ID_RE = re.compile(r"b_[0-9a-f]{32}")
_TENANT_DIR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ACTIVE = "tts:jobs:v1:active"
EXPIRY = "tts:jobs:v1:expiry"
PARTS = ("lines", "uttids", "results", "attempts", "events", "lease")
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)

# one line finished: record it once; count it; append to the event list
_FINISH_LINE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'audio_s', ARGV[4])
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
  redis.call('RPUSH', KEYS[3], ARGV[1])
  return 1
end
return 0
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
# reserve a WAV's bytes before writing it. KEYS: job, quota. ARGV: quota triples (output_bytes only)
_RESERVE_OUTPUT = RESERVE_LUA + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local refused = reserve(KEYS[2], ARGV, 1)
if refused then return refused end
redis.call('HINCRBY', KEYS[1], 'out_bytes', ARGV[3])
return false
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def tenant_dir(tenant: str) -> str:
    """A tenant's folder name: the tenant itself when it is a safe file name, else a hash of it."""
    if _TENANT_DIR_RE.fullmatch(tenant):
        return tenant
    return "t_" + hashlib.sha256(tenant.encode()).hexdigest()[:16]


def resolve_inside(root: str, tenant: str, name: str, field: str) -> Path:
    """``name`` (relative) as a file inside the tenant's own input folder ``<root>/<tenant_dir(tenant)>``.

    Missing, outside (``..``, absolute, a symlink pointing out), not a regular file, unreadable: all get the same
    answer, so the message never tells another tenant's (or the server's) files apart from absent ones."""
    if not root:
        raise InvalidArgument(field, "server paths are disabled on this gateway (TTS_GATEWAY_BATCH_INPUT_DIR is "
                                     "not set); upload the content instead")
    if not name or "\x00" in name:
        raise InvalidArgument(field, "empty path")
    base = (Path(root) / tenant_dir(tenant)).resolve()
    path = (base / name).resolve()          # symlinks resolved: a link pointing out is outside too
    if base not in path.parents or not os.access(path, os.R_OK) or not path.is_file():
        raise InvalidArgument(field, f"no readable file {name[:200]!r} in this tenant's input folder")
    return path


class LineError(Exception):
    """A line that cannot be synthesized; the message starts with the field."""


@dataclass
class LineSpec:
    uttid: str
    syn_text: str
    prompt_speech: str = ""
    prompt_text: str = ""
    sample_rate: int = 0
    seed: int | None = None


def parse_line(raw: bytes) -> LineSpec:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"line: not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"line: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise LineError("line: expected a JSON object")
    uttid = obj.get("uttid")
    if not isinstance(uttid, str) or not uttid:
        raise LineError("uttid: missing (a non-empty string is required)")
    if not UTTID_RE.fullmatch(uttid):
        raise LineError(f"uttid: {uttid[:140]!r} may only contain A-Z a-z 0-9 . _ - (1..128 characters, "
                        "starting with a letter or digit)")
    syn_text = obj.get("syn_text")
    if not isinstance(syn_text, str) or not syn_text.strip():
        raise LineError("syn_text: missing (a non-empty string is required)")
    spec = LineSpec(uttid=uttid, syn_text=syn_text)
    for key in ("prompt_speech", "prompt_text"):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise LineError(f"{key}: must be a string")
        setattr(spec, key, value)
    if len(spec.prompt_text) > 1000:
        raise LineError("prompt_text: longer than 1000 characters")
    rate = obj.get("sample_rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SUPPORTED_OUTPUT_RATES:
            raise LineError(f"sample_rate: {rate!r} is not supported; use one of "
                            f"{', '.join(map(str, SUPPORTED_OUTPUT_RATES))}")
        spec.sample_rate = rate
    seed = obj.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise LineError(f"seed: {seed!r} must be an integer in 0..2^63-1")
        spec.seed = seed
    return spec


def split_jsonl(data: bytes, field: str, max_lines: int) -> list[tuple[int, bytes]]:
    """Non-blank lines as (1-based line number, raw bytes). Empty job, too many lines and duplicate uttids are
    INVALID_ARGUMENT naming the line; other problems are left for the line itself to fail."""
    out: list[tuple[int, bytes]] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        out.append((lineno, raw))
        if len(out) > max_lines:
            raise InvalidArgument(field, f"more than {max_lines} lines (line {lineno}); the limit is {max_lines} "
                                         "(TTS_GATEWAY_BATCH_MAX_LINES)")
        try:
            uttid = json.loads(raw).get("uttid")
        except (ValueError, AttributeError):
            continue
        if isinstance(uttid, str) and uttid:
            if uttid in first_line:
                raise InvalidArgument(field, f"line {lineno}: duplicate uttid {uttid[:140]!r} (first on line "
                                             f"{first_line[uttid]})")
            first_line[uttid] = lineno
    if not out:
        raise InvalidArgument(field, "the job is empty (no non-blank lines)")
    return out


def line_result(rec: dict, index: int, attempts: int = 0) -> tts_pb2.BatchLineResult:
    return tts_pb2.BatchLineResult(
        line=rec.get("line", 0), uttid=rec.get("uttid", ""), state=LINE_PB.get(rec.get("status"), 0),
        error=rec.get("error", ""), normalized_text=rec.get("normalized_text", ""),
        phonemes=rec.get("phonemes", ""), duration_s=rec.get("duration_s", 0.0),
        real_time_factor=rec.get("rtf", 0.0), attempts=attempts)


def _split_item(item: bytes) -> tuple[int, bytes]:
    lineno, _, raw = item.partition(b"\t")
    return int(lineno), raw


def _uttid_of(raw: bytes) -> str:
    try:
        uttid = json.loads(raw).get("uttid")
    except (ValueError, AttributeError):
        return ""
    return uttid if isinstance(uttid, str) else ""


class BatchManager:
    def __init__(self, settings: GatewaySettings, pipeline: Pipeline):
        self.settings = settings
        self.pipeline = pipeline
        timeout = max(settings.redis_timeout_ms / 1000, 1.0)
        self.redis = aioredis.from_url(settings.redis_url, socket_timeout=timeout * 5,
                                       socket_connect_timeout=timeout, max_connections=settings.redis_max_connections)
        self.quotas = Quotas(self.redis, QuotaSettings(), unfinished_jobs=settings.batch_max_jobs_per_tenant)
        self.owner = secrets.token_hex(8)
        self.slots = asyncio.Semaphore(max(1, settings.batch_concurrency))
        self.output_root = Path(settings.batch_output_dir).resolve()
        self._running: dict[str, asyncio.Task] = {}
        self._scanner: asyncio.Task | None = None
        self._kick = asyncio.Event()
        self._tick = asyncio.Event()
        self._finish_line = self.redis.register_script(_FINISH_LINE)
        self._set_state = self.redis.register_script(_SET_STATE)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._retire_script = self.redis.register_script(_RETIRE)
        self._delete_script = self.redis.register_script(_DELETE)
        self._reserve_output = self.redis.register_script(_RESERVE_OUTPUT)

    # ---- keys and Redis ---------------------------------------------------------------------------------------
    @staticmethod
    def key(tenant: str, job_id: str, part: str = "") -> str:
        return f"tts:job:v1:{tenant}:{job_id}" + (f":{part}" if part else "")

    @staticmethod
    def index_key(tenant: str) -> str:
        return f"tts:jobs:v1:{tenant}"

    async def _r(self, coro):
        return await quota_call(coro, "batch job store")

    def _notify(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def _meta(self, tenant: str, job_id: str) -> dict:
        if not JOB_ID_RE.fullmatch(job_id or ""):
            raise NotFound(f"batch job {job_id[:64]!r} not found")
        raw = await self._r(self.redis.hgetall(self.key(tenant, job_id)))
        if not raw:
            raise NotFound(f"batch job {job_id!r} not found")
        return {k.decode(): v for k, v in raw.items()}

    @staticmethod
    def _job_pb(meta: dict) -> tts_pb2.BatchJob:
        s = lambda k: meta.get(k, b"").decode()  # noqa: E731
        out_dir = f"{tenant_dir(s('tenant'))}/{s('id')}"       # relative: no server path leaves the gateway
        return tts_pb2.BatchJob(
            id=s("id"), name=s("name"), state=STATE_PB.get(s("state"), 0), total=int(meta.get("total", 0)),
            done=int(meta.get("done", 0)), failed=int(meta.get("failed", 0)), created_at=s("created_at"),
            updated_at=s("updated_at"), finished_at=s("finished_at"), output_dir=out_dir,
            audio_seconds=round(float(meta.get("audio_s", 0) or 0), 3))

    # ---- RPCs -------------------------------------------------------------------------------------------------
    async def submit(self, tenant: str, request) -> tts_pb2.BatchJob:
        st = self.settings
        source = request.WhichOneof("source")
        if source == "server_path":
            field = "server_path"
            path = resolve_inside(st.batch_input_dir, tenant, request.server_path, field)
            size = path.stat().st_size
            if size > st.batch_max_bytes:
                raise InvalidArgument(field, f"{size} bytes is over the {st.batch_max_bytes} byte limit "
                                             "(TTS_GATEWAY_BATCH_MAX_BYTES)")
            data = await asyncio.to_thread(path.read_bytes)
        elif source == "jsonl":
            field, data = "jsonl", request.jsonl
        else:
            raise InvalidArgument("jsonl", "the job is empty: set jsonl (the content) or server_path")
        if len(data) > st.batch_max_bytes:
            raise InvalidArgument(field, f"{len(data)} bytes is over the {st.batch_max_bytes} byte limit "
                                         "(TTS_GATEWAY_BATCH_MAX_BYTES)")
        if len(request.name) > 200:
            raise InvalidArgument("name", "longer than 200 characters")
        cfg = request.config
        if cfg.WhichOneof("voice_source") == "reference_audio":
            raise InvalidArgument("config.reference_audio", "not accepted for batch jobs; give prompt_speech per "
                                  "line or a registered voice id in config.voice")
        validate_config(cfg, st.default_sample_rate, st.max_reference_bytes)
        await self._check_voice(tenant, cfg.voice, "config.voice")
        lines = split_jsonl(data, field, st.batch_max_lines)
        quota = {JOBS.field: 1, UNFINISHED_JOBS.field: 1, JOB_BYTES.field: len(data)}
        await self.quotas.reserve(tenant, **quota)             # atomic across gateways; refused: nothing taken

        job_id = "b_" + secrets.token_hex(16)
        out_dir = self.output_root / tenant_dir(tenant) / job_id
        now = _now()
        key = self.key(tenant, job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={
            "id": job_id, "tenant": tenant, "name": request.name, "state": QUEUED, "total": len(lines),
            "done": 0, "failed": 0, "audio_s": 0, "config": cfg.SerializeToString(), "output_dir": str(out_dir),
            "created_at": now, "updated_at": now, "finished_at": "", "bytes": len(data), "out_bytes": 0})
        for start in range(0, len(lines), 1000):
            pipe.rpush(self.key(tenant, job_id, "lines"),
                       *[f"{n}\t".encode() + raw for n, raw in lines[start:start + 1000]])
        uttids = {}
        for i, (_, raw) in enumerate(lines):
            uttid = _uttid_of(raw)
            if uttid and UTTID_RE.fullmatch(uttid):
                uttids[uttid] = i
        if uttids:
            pipe.hset(self.key(tenant, job_id, "uttids"), mapping=uttids)
        pipe.zadd(self.index_key(tenant), {job_id: time.time()})
        pipe.hset(ACTIVE, job_id, tenant)
        try:
            await self._r(pipe.execute())
        except TTSError:
            await self.quotas.release(tenant, **quota)
            raise
        log.info("batch submitted", extra={"job": job_id, "lines": len(lines), "bytes": len(data)})
        self._kick.set()
        return self._job_pb(await self._meta(tenant, job_id))

    async def _check_voice(self, tenant: str, voice: str, field: str) -> None:
        if not voice:
            return
        if is_registered(voice, field):
            try:
                await self.pipeline.voices.get(tenant, voice, with_audio=False)
            except NotFound:
                raise InvalidArgument(field, f"voice {voice!r} not found") from None
            return
        try:
            builtin = await self.pipeline.builtin_voices()
        except TTSError:
            return                      # the decoder is down: the lines will say so
        if not any(voice in names for names in builtin.values()):
            raise InvalidArgument(field, f"unknown voice {voice!r}")

    async def get(self, tenant: str, job_id: str, include_lines: bool = False) -> tts_pb2.BatchJob:
        meta = await self._meta(tenant, job_id)
        job = self._job_pb(meta)
        results = await self._r(self.redis.hgetall(self.key(tenant, job_id, "results")))
        attempts = {int(k): int(v) for k, v in
                    (await self._r(self.redis.hgetall(self.key(tenant, job_id, "attempts")))).items()}
        recs = {int(k): json.loads(v) for k, v in results.items()}
        for i in sorted(recs):
            if recs[i].get("status") == "failed":
                job.errors.append(line_result(recs[i], i, attempts.get(i, 0)))
        if include_lines:
            items = await self._r(self.redis.lrange(self.key(tenant, job_id, "lines"), 0, -1))
            for i, item in enumerate(items):
                if i in recs:
                    job.lines.append(line_result(recs[i], i, attempts.get(i, 0)))
                else:
                    lineno, raw = _split_item(item)
                    job.lines.append(tts_pb2.BatchLineResult(line=lineno, uttid=_uttid_of(raw),
                                                             state=tts_pb2.BATCH_LINE_PENDING,
                                                             attempts=attempts.get(i, 0)))
        return job

    async def list(self, tenant: str, limit: int) -> list[tts_pb2.BatchJob]:
        limit = min(limit or 100, 1000)
        ids = [i.decode() for i in await self._r(self.redis.zrevrange(self.index_key(tenant), 0, limit - 1))]
        out = []
        for job_id in ids:
            try:
                out.append(self._job_pb(await self._meta(tenant, job_id)))
            except NotFound:                    # expired after its retention time
                await self._r(self.redis.zrem(self.index_key(tenant), job_id))
        return out

    async def cancel(self, tenant: str, job_id: str) -> tts_pb2.BatchJob:
        meta = await self._meta(tenant, job_id)
        changed = await self._r(self._set_state(keys=[self.key(tenant, job_id)],
                                                args=[CANCELLED, _now(), "1", QUEUED, RUNNING]))
        if changed == -1:
            raise NotFound(f"batch job {job_id!r} not found")
        if changed == 0:
            state = (await self._meta(tenant, job_id)).get("state", b"").decode()
            if state != CANCELLED:
                raise FailedPrecondition(f"id: batch job {job_id!r} has already finished ({state})")
        else:
            log.info("batch cancelled", extra={"job": job_id})
            task = self._running.get(job_id)
            if task is not None:
                task.cancel()                   # its finally writes results.jsonl again with what finished
            await self._finalize(tenant, job_id, meta)
            self._notify()
        return await self.get(tenant, job_id)

    async def delete(self, tenant: str, job_id: str) -> tts_pb2.DeleteBatchResponse:
        """Cancel it if unfinished, then remove its records and files and give its quota back."""
        meta = await self._meta(tenant, job_id)
        if meta.get("state", b"").decode() not in TERMINAL:
            await self._r(self._set_state(keys=[self.key(tenant, job_id)],
                                          args=[CANCELLED, _now(), "1", QUEUED, RUNNING]))
            task = self._running.get(job_id)
            if task is not None:
                task.cancel()           # another gateway's runner sees the lease gone within batch_lease_s / 3
        freed = await self._delete_job(tenant, job_id)
        log.info("batch deleted", extra={"job": job_id, "freed_bytes": freed})
        self._notify()
        return tts_pb2.DeleteBatchResponse(freed_bytes=freed)

    async def _delete_job(self, tenant: str, job_id: str) -> int:
        keys = [self.key(tenant, job_id), *(self.key(tenant, job_id, p) for p in PARTS), self.index_key(tenant),
                ACTIVE, quota_key(tenant), EXPIRY]
        existed, out_bytes = await self._r(self._delete_script(keys=keys, args=[job_id, f"{tenant}\t{job_id}"]))
        folder = self.output_root / tenant_dir(tenant) / job_id

        def remove() -> int:
            size = sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0
            shutil.rmtree(folder, ignore_errors=True)
            return size

        on_disk = await asyncio.to_thread(remove)
        return max(int(out_bytes or 0), on_disk) if existed else on_disk

    async def _reap(self) -> None:
        """Delete finished jobs whose retention has passed (any gateway may do it; deleting twice is harmless)."""
        due = await self.redis.zrangebyscore(EXPIRY, "-inf", time.time(), start=0, num=50)
        for member in due:
            tenant, _, job_id = member.decode().rpartition("\t")
            if JOB_ID_RE.fullmatch(job_id):
                await self._delete_job(tenant, job_id)
                log.info("batch expired", extra={"job": job_id})
            else:
                await self.redis.zrem(EXPIRY, member)

    async def watch(self, tenant: str, job_id: str):
        await self._meta(tenant, job_id)
        events_key = self.key(tenant, job_id, "events")
        offset = await self._r(self.redis.llen(events_key))
        last = None
        first = True
        tick = self._tick
        while True:
            if not first:
                try:
                    await asyncio.wait_for(tick.wait(), self.settings.batch_watch_poll_s)
                except asyncio.TimeoutError:
                    pass
            tick = self._tick                   # taken before reading: a change after the reads wakes us
            try:
                meta = await self._meta(tenant, job_id)
            except NotFound:
                return                          # expired while watched
            job = self._job_pb(meta)
            new = await self._r(self.redis.lrange(events_key, offset, -1)) if not first else []
            offset += len(new)
            state = (job.state, job.done, job.failed)
            if first or new or state != last:
                event = tts_pb2.BatchEvent(job=job)
                if new:
                    recs = await self._r(self.redis.hmget(self.key(tenant, job_id, "results"), new))
                    attempts = await self._r(self.redis.hmget(self.key(tenant, job_id, "attempts"), new))
                    for idx, rec, att in zip(new, recs, attempts):
                        if rec:
                            event.finished.append(line_result(json.loads(rec), int(idx), int(att or 0)))
                yield event
                last = state
            first = False
            if meta.get("state", b"").decode() in TERMINAL:
                return

    async def _result_index(self, tenant: str, job_id: str, uttid: str) -> tuple[dict, int, dict | None]:
        meta = await self._meta(tenant, job_id)
        idx = await self._r(self.redis.hget(self.key(tenant, job_id, "uttids"), uttid)) if uttid else None
        if idx is None:
            raise NotFound(f"uttid {uttid!r} is not in batch job {job_id!r}")
        rec = await self._r(self.redis.hget(self.key(tenant, job_id, "results"), idx))
        return meta, int(idx), json.loads(rec) if rec else None

    async def _result_file(self, meta: dict, rec: dict, index: int, attempts: int) -> tts_pb2.BatchResultFile:
        out = tts_pb2.BatchResultFile(result=line_result(rec, index, attempts))
        if rec.get("status") == "done":
            path = Path(meta["output_dir"].decode()) / f"{rec['uttid']}.wav"
            try:
                out.wav = await asyncio.to_thread(path.read_bytes)
            except OSError:
                raise NotFound(f"the audio of {rec['uttid']!r} is gone from the gateway's disk") from None
        return out

    async def result(self, tenant: str, job_id: str, uttid: str) -> tts_pb2.BatchResultFile:
        meta, idx, rec = await self._result_index(tenant, job_id, uttid)
        if rec is None:
            raise FailedPrecondition(f"uttid: {uttid!r} has not finished yet")
        attempts = await self._r(self.redis.hget(self.key(tenant, job_id, "attempts"), idx))
        return await self._result_file(meta, rec, idx, int(attempts or 0))

    async def download(self, tenant: str, job_id: str, uttids):
        meta = await self._meta(tenant, job_id)
        wanted = set(uttids)
        results = await self._r(self.redis.hgetall(self.key(tenant, job_id, "results")))
        attempts = await self._r(self.redis.hgetall(self.key(tenant, job_id, "attempts")))
        recs = {int(k): json.loads(v) for k, v in results.items()}
        for i in sorted(recs):
            if wanted and recs[i].get("uttid") not in wanted:
                continue
            yield await self._result_file(meta, recs[i], i, int(attempts.get(str(i).encode(), 0)))

    # ---- running jobs -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._scanner = asyncio.get_running_loop().create_task(self._scan_forever())

    async def close(self) -> None:
        if self._scanner is not None:
            self._scanner.cancel()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)   # each releases its lease for another gateway
        await self.redis.aclose()

    async def _scan_forever(self) -> None:
        interval = max(self.settings.batch_lease_s / 2, 0.1)
        while True:
            try:
                await self._scan()
            except Exception:  # noqa: BLE001  (Redis down: retry at the next tick)
                log.warning("batch scan failed", exc_info=True)
            try:
                await asyncio.wait_for(self._kick.wait(), interval)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def _scan(self) -> None:
        active = await self.redis.hgetall(ACTIVE)
        lease_ms = int(self.settings.batch_lease_s * 1000)
        await self._reap()
        for job_b, tenant_b in active.items():
            job_id, tenant = job_b.decode(), tenant_b.decode()
            if job_id in self._running:
                continue
            if not await self.redis.set(self.key(tenant, job_id, "lease"), self.owner, nx=True, px=lease_ms):
                continue                        # another gateway runs it (or its lease has not lapsed yet)
            task = asyncio.get_running_loop().create_task(self._run_job(tenant, job_id))
            self._running[job_id] = task
            BATCH_RUNNING.set(len(self._running))
            task.add_done_callback(lambda _t, j=job_id: (self._running.pop(j, None),
                                                         BATCH_RUNNING.set(len(self._running))))

    async def _run_job(self, tenant: str, job_id: str) -> None:
        tenant_var.set(tenant)
        lease_key = self.key(tenant, job_id, "lease")
        me = asyncio.current_task()
        renewer = asyncio.get_running_loop().create_task(self._keep_lease(tenant, job_id, me))
        meta = None
        try:
            meta = await self.redis.hgetall(self.key(tenant, job_id))
            meta = {k.decode(): v for k, v in meta.items()}
            state = meta.get("state", b"").decode()
            if not meta or state in TERMINAL:     # e.g. finished, but its finalization was cut short
                if meta:
                    await self._finalize(tenant, job_id, meta)
                await self._retire(tenant, job_id)
                return
            try:
                cfg = tts_pb2.SynthesisConfig.FromString(meta["config"])
            except Exception:  # noqa: BLE001
                await self._set_state(keys=[self.key(tenant, job_id)], args=[FAILED, _now(), "1", QUEUED, RUNNING])
                await self._finalize(tenant, job_id, meta)
                return
            await self._set_state(keys=[self.key(tenant, job_id)], args=[RUNNING, _now(), "0", QUEUED])
            self._notify()
            items = await self.redis.lrange(self.key(tenant, job_id, "lines"), 0, -1)
            finished = {int(k) for k in await self.redis.hkeys(self.key(tenant, job_id, "results"))}
            pending = [i for i in range(len(items)) if i not in finished]
            log.info("batch running", extra={"job": job_id, "lines": len(items), "pending": len(pending)})
            out_dir = Path(meta["output_dir"].decode())
            await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
            queue = list(reversed(pending))

            async def worker():
                while queue:
                    idx = queue.pop()
                    async with self.slots:
                        lineno, raw = _split_item(items[idx])
                        await self._do_line(tenant, job_id, cfg, out_dir, idx, lineno, raw)

            workers = [asyncio.get_running_loop().create_task(worker())
                       for _ in range(min(self.settings.batch_concurrency, len(pending)) or 0)]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
            if await self._set_state(keys=[self.key(tenant, job_id)], args=[DONE, _now(), "1", RUNNING]) == 1:
                meta = await self._meta(tenant, job_id)
                log.info("batch done", extra={"job": job_id, "done": int(meta["done"]), "failed": int(meta["failed"])})
                await self._finalize(tenant, job_id, meta)
        except asyncio.CancelledError:
            # cancelled by CancelBatch, a lost lease or shutdown: write what finished if the job was cancelled
            try:
                state = (await self.redis.hget(self.key(tenant, job_id), "state") or b"").decode()
                if state == CANCELLED and meta:
                    await self._finalize(tenant, job_id, meta)
            except Exception:  # noqa: BLE001
                pass
        except Exception:  # noqa: BLE001  (Redis trouble: the lease lapses and a scan picks the job up again)
            log.warning("batch runner stopped", extra={"job": job_id}, exc_info=True)
        finally:
            renewer.cancel()
            try:
                await self._release(keys=[lease_key], args=[self.owner])
            except Exception:  # noqa: BLE001
                pass
            self._notify()

    async def _keep_lease(self, tenant: str, job_id: str, runner: asyncio.Task) -> None:
        lease_ms = int(self.settings.batch_lease_s * 1000)
        while True:
            await asyncio.sleep(self.settings.batch_lease_s / 3)
            try:
                kept = await self._renew(keys=[self.key(tenant, job_id, "lease")], args=[self.owner, lease_ms])
                state = (await self.redis.hget(self.key(tenant, job_id), "state") or b"").decode()
            except (RedisError, OSError):
                continue
            if not kept or state == CANCELLED:
                log.info("batch runner stops", extra={"job": job_id, "lease_kept": bool(kept), "state": state})
                runner.cancel()
                return

    async def _do_line(self, tenant: str, job_id: str, cfg, out_dir: Path, idx: int, lineno: int,
                       raw: bytes) -> None:
        st = self.settings
        rec = {"line": lineno, "uttid": _uttid_of(raw)}
        try:
            spec = parse_line(raw)
        except LineError as exc:
            await self._record(tenant, job_id, idx, {**rec, "status": "failed", "error": str(exc)})
            return
        delay = 0.5
        for attempt in range(st.batch_line_retries + 1):
            await self.redis.hincrby(self.key(tenant, job_id, "attempts"), idx, 1)
            try:
                result = await self._synthesize(tenant, job_id, cfg, out_dir, spec, lineno)
            except LineError as exc:
                result = {"status": "failed", "error": str(exc)}
            except TTSError as exc:
                if exc.code in TRANSIENT and attempt < st.batch_line_retries:
                    log.warning("batch line retried", extra={"job": job_id, "line": lineno, "error": exc.message})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
                    continue
                result = {"status": "failed", "error": exc.message}
            except Exception as exc:  # noqa: BLE001  (a bug must not stall the job: fail the line, loudly)
                log.exception("batch line crashed", extra={"job": job_id, "line": lineno})
                result = {"status": "failed", "error": f"internal error: {type(exc).__name__}"}
            await self._record(tenant, job_id, idx, {**rec, **result})
            return

    async def _record(self, tenant: str, job_id: str, idx: int, rec: dict) -> None:
        BATCH_LINES.labels(rec["status"]).inc()
        await self._finish_line(
            keys=[self.key(tenant, job_id), self.key(tenant, job_id, "results"), self.key(tenant, job_id, "events")],
            args=[idx, json.dumps(rec, ensure_ascii=False), "done" if rec["status"] == "done" else "failed",
                  rec.get("duration_s", 0.0), _now()])
        self._notify()

    async def _synthesize(self, tenant: str, job_id: str, job_cfg, out_dir: Path, spec: LineSpec,
                          lineno: int) -> dict:
        st = self.settings
        cfg = tts_pb2.SynthesisConfig()
        cfg.CopyFrom(job_cfg)
        cfg.encoding = tts_pb2.LINEAR16
        if spec.sample_rate:
            cfg.sample_rate = spec.sample_rate
        if spec.seed is not None:
            cfg.seed = spec.seed
        if spec.prompt_text:
            cfg.prompt_text = spec.prompt_text
        try:
            check_text(spec.syn_text, len(spec.syn_text), st.max_text_chars, field="syn_text")
        except InvalidArgument as exc:
            raise LineError(exc.message) from None
        if not has_speakable(spec.syn_text):
            raise LineError("syn_text: has nothing to speak (only punctuation, symbols or spaces)")
        ps = spec.prompt_speech
        if ps:
            try:
                registered = is_registered(ps, "prompt_speech")
            except InvalidArgument as exc:
                raise LineError(exc.message) from None
            builtin = set()
            if not registered:
                builtin = {n for names in (await self.pipeline.builtin_voices()).values() for n in names}
            if registered or ps in builtin:
                cfg.voice = ps
            else:
                try:
                    path = resolve_inside(st.batch_input_dir, tenant, ps, "prompt_speech")
                except InvalidArgument as exc:
                    raise LineError(exc.message) from None
                if path.stat().st_size > st.max_reference_bytes:
                    raise LineError(f"prompt_speech: {ps!r} is over the {st.max_reference_bytes} byte limit")
                cfg.reference_audio = await asyncio.to_thread(path.read_bytes)
        deadline = time.time() + st.batch_line_timeout_s
        metadata = (("x-request-id", f"{job_id[2:14]}-{lineno}"),)
        try:
            plan = await self.pipeline.plan(tenant, cfg, metadata, deadline, offline=True)
        except TTSError as exc:
            if ps and exc.code not in TRANSIENT:
                msg = re.sub(r"^(config\.reference_audio|audio): ", f"{ps!r}: ", exc.message)
                raise LineError(f"prompt_speech: {msg}") from None
            raise

        async def whole():
            yield spec.syn_text

        segments: dict[int, object] = {}
        parts, summary = [], None
        async for resp in self.pipeline.run(plan, whole(), deadline,
                                            on_segment=lambda seg: segments.__setitem__(seg.index, seg)):
            if resp.WhichOneof("response") == "audio":
                parts.append(resp.audio.audio)
            else:
                summary = resp.summary
        pcm = b"".join(parts)
        samples = len(pcm) // 2
        path = out_dir / f"{spec.uttid}.wav"
        tmp = out_dir / f".{spec.uttid}.{secrets.token_hex(4)}.part"
        size = 44 + len(pcm)
        refused = await self._r(self._reserve_output(keys=[self.key(tenant, job_id), quota_key(tenant)],
                                                     args=self.quotas.args(**{OUTPUT_BYTES.field: size})))
        if refused == b"gone":
            raise LineError("line: the job was deleted")
        try:
            self.quotas.refused(tenant, refused, {OUTPUT_BYTES.field: size})
        except ResourceExhausted as exc:
            raise LineError(f"output: {exc.message}") from None

        def write():
            tmp.write_bytes(wav_header(plan.sample_rate, samples) + pcm)
            os.replace(tmp, path)

        await asyncio.to_thread(write)
        ordered = [segments[i] for i in sorted(segments)]
        return {"status": "done", "normalized_text": "".join(s.normalized for s in ordered),
                "phonemes": " ".join(s.phonemes for s in ordered if s.phonemes),
                "duration_s": round(samples / plan.sample_rate, 3),
                "rtf": round(summary.real_time_factor, 3) if summary else 0.0, "sample_rate": plan.sample_rate}

    async def _finalize(self, tenant: str, job_id: str, meta: dict) -> None:
        """The job ended: results.jsonl (every line, in order), off the active list, keys expire."""
        items = await self._r(self.redis.lrange(self.key(tenant, job_id, "lines"), 0, -1))
        results = await self._r(self.redis.hgetall(self.key(tenant, job_id, "results")))
        attempts = await self._r(self.redis.hgetall(self.key(tenant, job_id, "attempts")))
        state = (await self._r(self.redis.hget(self.key(tenant, job_id), "state")) or b"").decode()
        lines = []
        for i, item in enumerate(items):
            rec = results.get(str(i).encode())
            if rec:
                rec = json.loads(rec)
            else:
                lineno, raw = _split_item(item)
                rec = {"line": lineno, "uttid": _uttid_of(raw), "status": "cancelled" if state == CANCELLED else
                       "pending"}
            out = {"line": rec["line"], "uttid": rec["uttid"], "status": rec["status"],
                   "normalized_text": rec.get("normalized_text", ""), "phonemes": rec.get("phonemes", ""),
                   "duration_s": rec.get("duration_s", 0.0), "rtf": rec.get("rtf", 0.0),
                   "error": rec.get("error", ""), "attempts": int(attempts.get(str(i).encode(), 0))}
            lines.append(json.dumps(out, ensure_ascii=False) + "\n")
        out_dir = Path(meta["output_dir"].decode())

        def write():
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / f".results.{secrets.token_hex(4)}.part"     # two writers (cancel, runner) never mix
            tmp.write_text("".join(lines), encoding="utf-8")
            os.replace(tmp, out_dir / "results.jsonl")

        await asyncio.to_thread(write)
        await self._retire(tenant, job_id)

    async def _retire(self, tenant: str, job_id: str) -> None:
        """Off the active list (the unfinished-jobs quota given back once); due for deletion after the retention."""
        due = time.time() + self.settings.batch_retention_hours * 3600
        await self._r(self._retire_script(keys=[ACTIVE, quota_key(tenant), EXPIRY, self.key(tenant, job_id)],
                                          args=[job_id, f"{tenant}\t{job_id}", due]))

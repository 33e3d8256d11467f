"""Running batch jobs: every gateway scans the active jobs, takes the ones whose lease has lapsed and runs their
pending lines (bounded concurrency, transient errors retried), writes each WAV then ``results.jsonl``, and deletes
finished jobs after their retention.

What can go wrong, and what it costs: a bad line, or any unexpected error while a line is handled, fails that line
(with the message); an unexpected error around a whole job fails that job once. Neither stops the runner. While the
store is unreachable (or full) every store call of the runner waits and retries with backoff, logged once per outage;
the runner goes on when the store is back, and takes its lease again if it lapsed meanwhile and no one else has it."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path

import grpc
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from shared.audio import wav_header
from shared.errors import InvalidArgument, NotFound, ResourceExhausted, TTSError
from shared.logging import tenant_var
from tts.v1 import tts_pb2

from ..pipeline import Pipeline
from ..quotas import JOB_BYTES, OUTPUT_BYTES, STORE_TROUBLE
from ..readings import segment_reading
from ..settings import GatewaySettings
from ..voices import is_registered
from .lines import LineError, LineSpec, is_path, parse_line, resolve_inside, tenant_dir, uttid_of
from .store import (CANCELLED, DONE, FAILED, QUEUED, RECORD_ALLOWANCE, RUNNING, TERMINAL, JobStore, guarded,
                    split_item)

log = logging.getLogger("gateway.batch")

BATCH_LINES = Counter("tts_gateway_batch_lines_total", "Batch lines finished by this gateway", ["outcome"])
BATCH_CAPACITY_WAITS = Counter("tts_gateway_batch_capacity_waits_total",
                               "Batch line starts refused by the decoders for lack of spare capacity, then retried")
BATCH_RUNNING = Gauge("tts_gateway_batch_jobs_running", "Batch jobs this gateway is running")

TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
STORE_BACKOFF_S = (0.1, 5.0)        # waiting for the store: first and longest pause between tries
MAX_ERROR_CHARS = 2000              # of a line's error message, as recorded


class Runner:
    def __init__(self, settings: GatewaySettings, pipeline: Pipeline, store: JobStore):
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.owner = secrets.token_hex(8)
        self.slots = asyncio.Semaphore(max(1, settings.batch.concurrency))
        self.output_root = Path(settings.batch.output_dir).resolve()
        self.running: dict[str, asyncio.Task] = {}
        self._scanner: asyncio.Task | None = None
        self._kick = asyncio.Event()
        self.tick = asyncio.Event()             # set (and replaced) whenever a job changes: WatchBatch waits on it
        self._store_down = False                # an outage of the store is logged once, and its end
        self._last_scan_error = ""

    def notify(self) -> None:
        self.tick.set()
        self.tick = asyncio.Event()

    def kick(self) -> None:
        """A job was submitted: scan now, not at the next interval."""
        self._kick.set()

    def stop(self, job_id: str) -> None:
        task = self.running.get(job_id)
        if task is not None:
            task.cancel()

    def output_dir(self, tenant: str, job_id: str) -> Path:
        return self.output_root / tenant_dir(tenant) / job_id

    def start(self) -> None:
        self._scanner = asyncio.get_running_loop().create_task(self._scan_forever())

    async def close(self) -> None:
        if self._scanner is not None:
            self._scanner.cancel()
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)   # each releases its lease for another gateway

    # ---- finding jobs -----------------------------------------------------------------------------------------
    async def _scan_forever(self) -> None:
        interval = max(self.settings.batch.lease_s / 2, 0.1)
        pause = interval
        while True:
            try:
                await self._scan()
                self._store_back()
                self._last_scan_error = ""
                pause = interval
            except STORE_TROUBLE as exc:        # retried with backoff, logged once per outage
                self._store_trouble(exc)
                pause = min(pause * 2, max(interval, STORE_BACKOFF_S[1]))
            except Exception as exc:  # noqa: BLE001  (a bug: logged when it first shows, the scan goes on)
                if repr(exc) != self._last_scan_error:
                    self._last_scan_error = repr(exc)
                    log.exception("batch scan failed")
            try:
                await asyncio.wait_for(self._kick.wait(), pause)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    # ---- the store, when it is away ---------------------------------------------------------------------------
    async def _store(self, fn, *args):
        """``await fn(*args)``, a store call of the runner's: while the store is unreachable or full, wait (backing
        off) and call again. Any other error is the caller's."""
        pause = STORE_BACKOFF_S[0]
        while True:
            try:
                result = await fn(*args)
            except STORE_TROUBLE as exc:
                self._store_trouble(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, STORE_BACKOFF_S[1])
                continue
            self._store_back()
            return result

    def _store_trouble(self, exc: BaseException) -> None:
        if not self._store_down:
            self._store_down = True
            log.warning("batch store unreachable or full; batch jobs wait for it, retried with backoff",
                        extra={"error": f"{type(exc).__name__}: {exc}"[:300]})

    def _store_back(self) -> None:
        if self._store_down:
            self._store_down = False
            log.info("batch store reachable again; batch jobs go on")

    async def _scan(self) -> None:
        active = await self.store.active()
        lease_ms = int(self.settings.batch.lease_s * 1000)
        await self._reap()
        for job_id, tenant in active.items():
            if job_id in self.running:
                continue
            if not await self.store.take_lease(tenant, job_id, self.owner, lease_ms):
                continue                        # another gateway runs it (or its lease has not lapsed yet)
            task = asyncio.get_running_loop().create_task(self._run_job(tenant, job_id))
            self.running[job_id] = task
            BATCH_RUNNING.set(len(self.running))
            task.add_done_callback(lambda _t, j=job_id: (self.running.pop(j, None),
                                                         BATCH_RUNNING.set(len(self.running))))

    async def _reap(self) -> None:
        """Delete finished jobs whose retention has passed (any gateway may do it; deleting twice is harmless)."""
        for tenant, job_id in await self.store.due():
            await self.delete_job(tenant, job_id)
            log.info("batch expired", extra={"job": job_id})

    async def delete_job(self, tenant: str, job_id: str) -> int:
        """Its records, its files and its quota; returns the bytes freed."""
        existed, out_bytes = await guarded(self.store.delete(tenant, job_id))
        folder = self.output_dir(tenant, job_id)

        def remove() -> int:
            size = sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0
            shutil.rmtree(folder, ignore_errors=True)
            return size

        on_disk = await asyncio.to_thread(remove)
        return max(out_bytes, on_disk) if existed else on_disk

    # ---- running one job --------------------------------------------------------------------------------------
    async def _run_job(self, tenant: str, job_id: str) -> None:
        tenant_var.set(tenant)
        me = asyncio.current_task()
        renewer = asyncio.get_running_loop().create_task(self._keep_lease(tenant, job_id, me))
        meta = None
        try:
            meta = await self._store(self.store.meta, tenant, job_id)
            state = meta.get("state", b"").decode()
            if not meta or state in TERMINAL:     # e.g. finished, but its finalization was cut short
                if meta:
                    await self._store(self.finalize, tenant, job_id, meta)
                await self._store(self._retire, tenant, job_id)
                return
            try:
                cfg = tts_pb2.SynthesisConfig.FromString(meta["config"])
            except Exception:  # noqa: BLE001
                await self._store(self.store.set_state, tenant, job_id, FAILED, True, QUEUED, RUNNING)
                await self._store(self.finalize, tenant, job_id, meta)
                return
            await self._store(self.store.set_state, tenant, job_id, RUNNING, False, QUEUED)
            self.notify()
            items = await self._store(self.store.lines, tenant, job_id)
            finished = await self._store(self.store.finished, tenant, job_id)
            pending = [i for i in range(len(items)) if i not in finished]
            log.info("batch running", extra={"job": job_id, "lines": len(items), "pending": len(pending)})
            out_dir = Path(meta["output_dir"].decode())
            await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
            queue = list(reversed(pending))

            async def worker():
                while queue:
                    idx = queue.pop()
                    async with self.slots:
                        lineno, raw = split_item(items[idx])
                        await self._do_line(tenant, job_id, cfg, out_dir, idx, lineno, raw)

            workers = [asyncio.get_running_loop().create_task(worker())
                       for _ in range(min(self.settings.batch.concurrency, len(pending)) or 0)]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
            if await self._store(self.store.set_state, tenant, job_id, DONE, True, RUNNING) == 1:
                meta = await self._store(self.store.meta, tenant, job_id)
                log.info("batch done", extra={"job": job_id, "done": int(meta["done"]), "failed": int(meta["failed"])})
                await self._store(self.finalize, tenant, job_id, meta)
        except asyncio.CancelledError:
            # cancelled by CancelBatch, a lost lease or shutdown: write what finished if the job was cancelled
            try:
                if await self.store.state(tenant, job_id) == CANCELLED and meta:
                    await self.finalize(tenant, job_id, meta)
            except Exception:  # noqa: BLE001
                pass
        except Exception:  # noqa: BLE001  (a bug or bad data, not the store: the job fails once, no crash loop)
            log.exception("batch job failed", extra={"job": job_id})
            await self._fail_job(tenant, job_id, meta)
        finally:
            renewer.cancel()
            try:
                await self.store.release_lease(tenant, job_id, self.owner)
            except Exception:  # noqa: BLE001
                pass
            self.notify()

    async def _fail_job(self, tenant: str, job_id: str, meta: dict | None) -> None:
        """After an unexpected error: FAILED, its results.jsonl if that can be written, and off the active list."""
        try:
            await self._store(self.store.set_state, tenant, job_id, FAILED, True, QUEUED, RUNNING)
            if meta:
                await self._store(self.finalize, tenant, job_id, meta)
        except Exception:  # noqa: BLE001
            log.exception("batch job could not be finalized", extra={"job": job_id})
        try:
            await self._store(self._retire, tenant, job_id)
        except Exception:  # noqa: BLE001
            log.exception("batch job could not be retired", extra={"job": job_id})

    async def _keep_lease(self, tenant: str, job_id: str, runner: asyncio.Task) -> None:
        lease_ms = int(self.settings.batch.lease_s * 1000)
        while True:
            await asyncio.sleep(self.settings.batch.lease_s / 3)
            try:
                # lapsed while the store was away and no one took it: ours again
                kept = (await self.store.renew_lease(tenant, job_id, self.owner, lease_ms)
                        or await self.store.take_lease(tenant, job_id, self.owner, lease_ms))
                state = await self.store.state(tenant, job_id)
            except (RedisError, OSError):
                continue
            if not kept or state == CANCELLED:
                log.info("batch runner stops", extra={"job": job_id, "lease_kept": bool(kept), "state": state})
                runner.cancel()
                return

    # ---- one line ---------------------------------------------------------------------------------------------
    async def _do_line(self, tenant: str, job_id: str, cfg, out_dir: Path, idx: int, lineno: int,
                       raw: bytes) -> None:
        """One line, recorded whatever happens to it (cancellation aside): the runner never stops on a line."""
        rec = {"line": lineno, "uttid": uttid_of(raw)[:140]}       # a longer one is no uttid (the line fails)
        wav = None
        try:
            result, wav = await self._line(tenant, job_id, cfg, out_dir, idx, lineno, raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (a bug or a fault nobody foresaw: this line fails with it, loudly)
            log.exception("batch line crashed", extra={"job": job_id, "line": lineno})
            result = {"status": "failed", "error": f"line: internal error ({type(exc).__name__}: {exc})"}
        await self._record(tenant, job_id, idx, {**rec, **result}, wav)

    async def _line(self, tenant: str, job_id: str, cfg, out_dir: Path, idx: int, lineno: int,
                    raw: bytes) -> tuple[dict, tuple[Path, int] | None]:
        """(the line's result, the WAV it wrote with its size, or None); transient errors are retried, and a store
        that is away, or decoders with no spare capacity for batch work (RESOURCE_EXHAUSTED from the decoder: batch
        lines run at batch priority and only on what live streams leave), are waited for without using up a try."""
        st = self.settings
        try:
            spec = parse_line(raw, st.max_text_chars)
        except LineError as exc:
            return {"status": "failed", "error": str(exc)}, None
        delay, pause = 0.5, STORE_BACKOFF_S[0]
        attempt = 0
        while True:
            await self._store(self.store.attempt, tenant, job_id, idx)
            try:
                return await self._synthesize(tenant, job_id, cfg, out_dir, spec, lineno)
            except LineError as exc:
                return {"status": "failed", "error": str(exc)}, None
            except STORE_TROUBLE as exc:        # e.g. a registered voice's record: wait for the store, then again
                self._store_trouble(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, STORE_BACKOFF_S[1])
                continue
            except TTSError as exc:
                if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED and exc.message.startswith("decoder"):
                    # no spare real-time capacity for batch work now: wait as the decoder says, never fail for it
                    BATCH_CAPACITY_WAITS.inc()
                    await asyncio.sleep(min(max(getattr(exc, "retry_after_s", 1.0), 0.2), 5.0))
                    continue
                if exc.code in TRANSIENT and attempt < st.batch.line_retries:
                    log.warning("batch line retried", extra={"job": job_id, "line": lineno, "error": exc.message})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
                    attempt += 1
                    continue
                return {"status": "failed", "error": exc.message}, None

    async def _record(self, tenant: str, job_id: str, idx: int, rec: dict, wav: tuple[Path, int] | None) -> None:
        if rec.get("error"):
            rec["error"] = rec["error"][:MAX_ERROR_CHARS]
        answer = await self._store(self.store.finish_line, tenant, job_id, idx, rec, self._fallback(rec))
        if answer == 2:                 # the quota could not hold its result: recorded as failed, its audio goes
            rec["status"] = "failed"
            if wav is not None:
                await asyncio.to_thread(wav[0].unlink, missing_ok=True)
                await self._store(self.store.release_output, tenant, job_id, wav[1])
        BATCH_LINES.labels(rec["status"]).inc()
        self.notify()

    def _fallback(self, rec: dict) -> dict:
        """What a line is recorded as when the job_bytes quota cannot take its result: a failure naming the quota,
        of at most RECORD_ALLOWANCE bytes (paid for at submit)."""
        size = len(json.dumps(rec, ensure_ascii=False).encode())
        limit = self.store.quotas.limits[JOB_BYTES.field]
        out = {"line": rec["line"], "uttid": rec["uttid"][:128], "status": "failed",
               "error": f"{JOB_BYTES.field}: this line's result ({size} bytes) is over the tenant's quota of {limit} "
                        f"{JOB_BYTES.unit} ({JOB_BYTES.env}); delete some jobs first"}
        while len(json.dumps(out, ensure_ascii=False).encode()) > RECORD_ALLOWANCE and out["uttid"]:
            out["uttid"] = out["uttid"][:len(out["uttid"]) // 2]
        return out

    async def _line_config(self, tenant: str, job_cfg, spec: LineSpec):
        """The job's config with the line's own fields (checked already by ``parse_line``); a line's
        ``prompt_speech`` is a registered voice, a built-in voice or a file in the tenant's input folder."""
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
        ps = spec.prompt_speech
        if not ps:
            return cfg
        try:
            registered = is_registered(ps, "prompt_speech")
        except InvalidArgument as exc:
            raise LineError(exc.message) from None
        if registered:
            try:
                await self.pipeline.voices.get(tenant, ps, with_audio=False)
            except NotFound:
                raise LineError((await self.pipeline.unknown_voice(tenant, ps, "prompt_speech")).message) from None
            cfg.voice = ps
            return cfg
        if ps in {n for names in (await self.pipeline.builtin_voices()).values() for n in names}:
            cfg.voice = ps
            return cfg
        try:
            path = resolve_inside(st.batch.input_dir, tenant, ps, "prompt_speech")
        except InvalidArgument as exc:
            if is_path(ps):             # a path keeps the path rules (one answer for missing, outside, foreign)
                raise LineError(exc.message) from None
            raise LineError((await self.pipeline.unknown_voice(tenant, ps, "prompt_speech")).message) from None
        if path.stat().st_size > st.max_reference_bytes:
            raise LineError(f"prompt_speech: {ps!r} is over the {st.max_reference_bytes} byte limit")
        cfg.reference_audio = await asyncio.to_thread(path.read_bytes)
        return cfg

    async def _synthesize(self, tenant: str, job_id: str, job_cfg, out_dir: Path, spec: LineSpec,
                          lineno: int) -> tuple[dict, tuple[Path, int]]:
        cfg = await self._line_config(tenant, job_cfg, spec)
        ps = spec.prompt_speech
        deadline = time.time() + self.settings.batch.line_timeout_s
        metadata = (("x-request-id", f"{job_id[2:14]}-{lineno}"),)
        try:
            plan = await self.pipeline.plan(tenant, cfg, metadata, deadline, offline=True, batch=True)
        except TTSError as exc:
            if ps and exc.code not in TRANSIENT:
                msg = re.sub(r"^(config\.reference_audio|audio): ", f"{ps!r}: ", exc.message)
                raise LineError(f"prompt_speech: {msg}") from None
            raise
        whole = await self.pipeline.synthesize_whole(plan, spec.syn_text, deadline)
        pcm = whole.audio
        samples = len(pcm) // 2
        path = out_dir / f"{spec.uttid}.wav"
        tmp = out_dir / f".{spec.uttid}.{secrets.token_hex(4)}.part"
        size = 44 + len(pcm)
        refused = await self._store(self.store.reserve_output, tenant, job_id,
                                    self.store.quotas.args(**{OUTPUT_BYTES.field: size}))
        if refused == b"gone":
            raise LineError("line: the job was deleted")
        try:
            self.store.quotas.refused(tenant, refused, {OUTPUT_BYTES.field: size})
        except ResourceExhausted as exc:
            raise LineError(f"output: {exc.message}") from None

        def write():
            try:
                tmp.write_bytes(wav_header(plan.sample_rate, samples) + pcm)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise

        try:
            await asyncio.to_thread(write)
        except OSError as exc:          # e.g. the disk is full: the line fails, its reservation is given back
            await self._store(self.store.release_output, tenant, job_id, size)
            raise LineError(f"output: the WAV could not be written ({exc.strerror or type(exc).__name__})") from None
        summary = whole.summary
        return {"status": "done", "normalized_text": "".join(s.normalized for s in whole.segments),
                "phonemes": " ".join(r for r in map(segment_reading, whole.segments) if r),
                "duration_s": round(samples / plan.sample_rate, 3),
                "rtf": round(summary.real_time_factor, 3) if summary else 0.0,
                "sample_rate": plan.sample_rate}, (path, size)

    # ---- the end of a job -------------------------------------------------------------------------------------
    async def finalize(self, tenant: str, job_id: str, meta: dict) -> None:
        """The job ended: results.jsonl (every line, in order), off the active list, keys expire."""
        items = await guarded(self.store.lines(tenant, job_id))
        results = await guarded(self.store.results(tenant, job_id))
        attempts = await guarded(self.store.attempts(tenant, job_id))
        state = await guarded(self.store.state(tenant, job_id))
        lines = []
        for i, item in enumerate(items):
            rec = results.get(i)
            if not rec:
                lineno, raw = split_item(item)
                rec = {"line": lineno, "uttid": uttid_of(raw), "status": "cancelled" if state == CANCELLED else
                       "pending"}
            out = {"line": rec["line"], "uttid": rec["uttid"], "status": rec["status"],
                   "normalized_text": rec.get("normalized_text", ""), "phonemes": rec.get("phonemes", ""),
                   "duration_s": rec.get("duration_s", 0.0), "rtf": rec.get("rtf", 0.0),
                   "error": rec.get("error", ""), "attempts": attempts.get(i, 0)}
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
        await guarded(self.store.retire(tenant, job_id, time.time() + self.settings.batch.retention_hours * 3600))

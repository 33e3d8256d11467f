"""The batch RPCs (SubmitBatch, GetBatch, ListBatches, CancelBatch, DeleteBatch, WatchBatch, GetBatchResult,
DownloadBatch) for one gateway: checks, the job's record in the store, and the runner that synthesizes it."""
from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

from shared.errors import FailedPrecondition, InvalidArgument, NotFound, TTSError
from tts.v1 import tts_pb2

from ..pipeline import Pipeline
from ..quotas import JOBS, UNFINISHED_JOBS
from ..settings import GatewaySettings
from ..validate import validate_config
from ..voices import is_registered
from .lines import UTTID_RE, resolve_inside, split_jsonl, uttid_of
from .runner import Runner
from .store import (CANCELLED, JOB_ID_RE, QUEUED, RUNNING, TERMINAL, JobStore, guarded, job_pb, line_result, now,
                    split_item)

log = logging.getLogger("gateway.batch")


class BatchManager:
    def __init__(self, settings: GatewaySettings, pipeline: Pipeline):
        self.settings = settings
        self.pipeline = pipeline
        self.store = JobStore(settings)
        self.runner = Runner(settings, pipeline, self.store)

    def start(self) -> None:
        self.runner.start()

    async def close(self) -> None:
        await self.runner.close()
        await self.store.close()

    async def _meta(self, tenant: str, job_id: str) -> dict:
        if not JOB_ID_RE.fullmatch(job_id or ""):
            raise NotFound(f"batch job {job_id[:64]!r} not found")
        meta = await guarded(self.store.meta(tenant, job_id))
        if not meta:
            raise NotFound(f"batch job {job_id!r} not found")
        return meta

    # ---- RPCs -------------------------------------------------------------------------------------------------
    async def submit(self, tenant: str, request) -> tts_pb2.BatchJob:
        st = self.settings
        source = request.WhichOneof("source")
        if source == "server_path":
            field = "server_path"
            path = resolve_inside(st.batch.input_dir, tenant, request.server_path, field)
            size = path.stat().st_size
            if size > st.batch.max_bytes:
                raise InvalidArgument(field, f"{size} bytes is over the {st.batch.max_bytes} byte limit "
                                             "(TTS_GATEWAY_BATCH_MAX_BYTES)")
            data = await asyncio.to_thread(path.read_bytes)
        elif source == "jsonl":
            field, data = "jsonl", request.jsonl
        else:
            raise InvalidArgument("jsonl", "the job is empty: set jsonl (the content) or server_path")
        if len(data) > st.batch.max_bytes:
            raise InvalidArgument(field, f"{len(data)} bytes is over the {st.batch.max_bytes} byte limit "
                                         "(TTS_GATEWAY_BATCH_MAX_BYTES)")
        if len(request.name) > 200:
            raise InvalidArgument("name", "longer than 200 characters")
        cfg = request.config
        if cfg.WhichOneof("voice_source") == "reference_audio":
            raise InvalidArgument("config.reference_audio", "not accepted for batch jobs; give prompt_speech per "
                                  "line or a registered voice id in config.voice")
        validate_config(cfg, st.default_sample_rate, st.max_reference_bytes)
        await self.pipeline.check_model(cfg.model)
        await self._check_voice(tenant, cfg.voice, "config.voice")

        def read() -> tuple[list[tuple[int, bytes]], dict[str, int]]:
            lines = split_jsonl(data, field, st.batch.max_lines)
            return lines, {u: i for i, (_, raw) in enumerate(lines) if UTTID_RE.fullmatch(u := uttid_of(raw))}

        lines, uttids = await asyncio.to_thread(read)           # up to TTS_GATEWAY_BATCH_MAX_BYTES: off the loop
        quota = {JOBS.field: 1, UNFINISHED_JOBS.field: 1}       # and job_bytes, counted by the script that writes

        job_id = "b_" + secrets.token_hex(16)
        created = now()
        record = {
            "id": job_id, "tenant": tenant, "name": request.name, "state": QUEUED, "total": len(lines),
            "done": 0, "failed": 0, "audio_s": 0, "config": cfg.SerializeToString(),
            "output_dir": str(self.runner.output_dir(tenant, job_id)),
            "created_at": created, "updated_at": created, "finished_at": "", "out_bytes": 0}
        quotas = self.store.quotas
        refused = await guarded(self.store.create(tenant, job_id, record, lines, uttids, quotas.args(**quota)))
        quotas.refused(tenant, refused, quota)                  # atomic across gateways; refused: nothing written
        log.info("batch submitted", extra={"job": job_id, "lines": len(lines), "bytes": len(data)})
        self.runner.kick()
        return job_pb(await self._meta(tenant, job_id))

    async def _check_voice(self, tenant: str, voice: str, field: str) -> None:
        if not voice:
            return
        if is_registered(voice, field):
            try:
                await self.pipeline.voices.get(tenant, voice, with_audio=False)
            except NotFound:
                raise await self.pipeline.unknown_voice(tenant, voice, field) from None
            return
        try:
            builtin = await self.pipeline.builtin_voices()
        except TTSError:
            return                      # the decoder is down: the lines will say so
        if not any(voice in names for names in builtin.values()):
            raise await self.pipeline.unknown_voice(tenant, voice, field)

    async def get(self, tenant: str, job_id: str, include_lines: bool = False) -> tts_pb2.BatchJob:
        job = job_pb(await self._meta(tenant, job_id))
        recs = await guarded(self.store.results(tenant, job_id))
        attempts = await guarded(self.store.attempts(tenant, job_id))
        for i in sorted(recs):
            if recs[i].get("status") == "failed":
                job.errors.append(line_result(recs[i], i, attempts.get(i, 0)))
        if include_lines:
            for i, item in enumerate(await guarded(self.store.lines(tenant, job_id))):
                if i in recs:
                    job.lines.append(line_result(recs[i], i, attempts.get(i, 0)))
                else:
                    lineno, raw = split_item(item)
                    job.lines.append(tts_pb2.BatchLineResult(line=lineno, uttid=uttid_of(raw),
                                                             state=tts_pb2.BATCH_LINE_PENDING,
                                                             attempts=attempts.get(i, 0)))
        return job

    async def list(self, tenant: str, limit: int) -> list[tts_pb2.BatchJob]:
        out = []
        for job_id in await guarded(self.store.job_ids(tenant, min(limit or 100, 1000))):
            try:
                out.append(job_pb(await self._meta(tenant, job_id)))
            except NotFound:                    # expired after its retention time
                await guarded(self.store.unindex(tenant, job_id))
        return out

    async def cancel(self, tenant: str, job_id: str) -> tts_pb2.BatchJob:
        meta = await self._meta(tenant, job_id)
        changed = await guarded(self.store.set_state(tenant, job_id, CANCELLED, True, QUEUED, RUNNING))
        if changed == -1:
            raise NotFound(f"batch job {job_id!r} not found")
        if changed == 0:
            state = (await self._meta(tenant, job_id)).get("state", b"").decode()
            if state != CANCELLED:
                raise FailedPrecondition(f"id: batch job {job_id!r} has already finished ({state})")
        else:
            log.info("batch cancelled", extra={"job": job_id})
            self.runner.stop(job_id)            # its finally writes results.jsonl again with what finished
            await self.runner.finalize(tenant, job_id, meta)
            self.runner.notify()
        return await self.get(tenant, job_id)

    async def delete(self, tenant: str, job_id: str) -> tts_pb2.DeleteBatchResponse:
        """Cancel it if unfinished, then remove its records and files and give its quota back."""
        meta = await self._meta(tenant, job_id)
        if meta.get("state", b"").decode() not in TERMINAL:
            await guarded(self.store.set_state(tenant, job_id, CANCELLED, True, QUEUED, RUNNING))
            self.runner.stop(job_id)    # another gateway's runner sees the lease gone within batch.lease_s / 3
        freed = await self.runner.delete_job(tenant, job_id)
        log.info("batch deleted", extra={"job": job_id, "freed_bytes": freed})
        self.runner.notify()
        return tts_pb2.DeleteBatchResponse(freed_bytes=freed)

    async def watch(self, tenant: str, job_id: str):
        await self._meta(tenant, job_id)
        offset = await guarded(self.store.event_count(tenant, job_id))
        last = None
        first = True
        tick = self.runner.tick
        while True:
            if not first:
                try:
                    await asyncio.wait_for(tick.wait(), self.settings.batch.watch_poll_s)
                except asyncio.TimeoutError:
                    pass
            tick = self.runner.tick             # taken before reading: a change after the reads wakes us
            try:
                meta = await self._meta(tenant, job_id)
            except NotFound:
                return                          # expired while watched
            job = job_pb(meta)
            finished = [] if first else await guarded(self.store.finished_since(tenant, job_id, offset))
            offset += len(finished)
            state = (job.state, job.done, job.failed)
            if first or finished or state != last:
                yield tts_pb2.BatchEvent(job=job, finished=finished)
                last = state
            first = False
            if meta.get("state", b"").decode() in TERMINAL:
                return

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
        meta = await self._meta(tenant, job_id)
        idx = await guarded(self.store.line_of(tenant, job_id, uttid))
        if idx is None:
            raise NotFound(f"uttid {uttid!r} is not in batch job {job_id!r}")
        rec, attempts = await guarded(self.store.result(tenant, job_id, idx))
        if rec is None:
            raise FailedPrecondition(f"uttid: {uttid!r} has not finished yet")
        return await self._result_file(meta, rec, idx, attempts)

    async def download(self, tenant: str, job_id: str, uttids):
        meta = await self._meta(tenant, job_id)
        wanted = set(uttids)
        recs = await guarded(self.store.results(tenant, job_id))
        attempts = await guarded(self.store.attempts(tenant, job_id))
        for i in sorted(recs):
            if wanted and recs[i].get("uttid") not in wanted:
                continue
            yield await self._result_file(meta, recs[i], i, attempts.get(i, 0))

"""The batch page and its HTTP API: submit a JSONL file, list, get, cancel and watch jobs, fetch a line's WAV or
the whole job as a zip."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from aiohttp import web

from tts_client.aio import TTSError, batch_line_record, make_config, to_dict

from .errors import HTTPError
from .inputs import CLIENT, SETTINGS, STATIC, bearer, read_body

log = logging.getLogger("web")


# ---- batch jobs (the batch page) ------------------------------------------------------------------------------------------
def _job(job) -> dict:
    d = to_dict(job)
    d["state"] = d["state"].removeprefix("BATCH_").lower()
    return d


def _batch_config(query) -> object:
    def num(name, kind):
        raw = query.get(name, "").strip()
        if not raw:
            return None
        try:
            return kind(raw)
        except ValueError:
            raise HTTPError(400, f"{raw!r} is not a {kind.__name__}", name) from None

    return make_config(voice=query.get("voice", ""), sample_rate=num("sample_rate", int) or 0,
                       speed=num("speed", float) or 0.0, seed=num("seed", int), model=query.get("model", ""),
                       language=query.get("language", ""), encoding="wav")


async def batch_submit(request: web.Request) -> web.Response:
    """Body: the JSONL file as is. Query: name and defaults for every line (voice, sample_rate, speed, seed, model)."""
    data = await read_body(request, request.app[SETTINGS].max_upload_mb * 1024 * 1024, "jsonl")
    if not data.strip():
        raise HTTPError(400, "is empty: send the JSONL file as the request body", "jsonl")
    job = await request.app[CLIENT].submit_batch(data, _batch_config(request.query),
                                                 request.query.get("name", ""), token=bearer(request))
    return web.json_response(_job(job), status=201)


async def batch_list(request: web.Request) -> web.Response:
    jobs = await request.app[CLIENT].list_batches(token=bearer(request))
    return web.json_response({"jobs": [_job(j) for j in jobs]})


async def batch_get(request: web.Request) -> web.Response:
    job = await request.app[CLIENT].get_batch(request.match_info["job"], request.query.get("lines") == "1",
                                              token=bearer(request))
    return web.json_response(_job(job))


async def batch_cancel(request: web.Request) -> web.Response:
    return web.json_response(_job(await request.app[CLIENT].cancel_batch(request.match_info["job"],
                                                                         token=bearer(request))))


async def batch_watch(request: web.Request) -> web.StreamResponse:
    """NDJSON, one BatchEvent per line (job counters + lines finished since the last one), until the job ends."""
    events = request.app[CLIENT].watch_batch(request.match_info["job"], token=bearer(request))
    try:
        first = await events.__anext__()         # NOT_FOUND etc. → a proper HTTP status
    except StopAsyncIteration:
        raise HTTPError(404, "no such batch job", "id") from None
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        event = first
        while True:
            d = to_dict(event)
            d["job"] = _job(event.job)
            await resp.write(json.dumps(d, ensure_ascii=False).encode() + b"\n")
            try:
                event = await events.__anext__()
            except StopAsyncIteration:
                break
    except TTSError as exc:
        log.warning("batch watch failed", extra={"code": exc.code, "error": exc.message})
        raise ConnectionAbortedError(exc.message) from None
    finally:
        await events.aclose()
    await resp.write_eof()
    return resp


async def batch_result(request: web.Request) -> web.Response:
    item = await request.app[CLIENT].get_batch_result(request.match_info["job"], request.match_info["uttid"],
                                                      token=bearer(request))
    if not item.wav:
        raise HTTPError(404, f"line {item.result.uttid!r} failed: {item.result.error}", "uttid")
    return web.Response(body=item.wav, headers={
        "Content-Type": "audio/wav", "Content-Disposition": f'attachment; filename="{item.result.uttid}.wav"'})


async def batch_download(request: web.Request) -> web.StreamResponse:
    """A zip of every finished line's <uttid>.wav plus results.jsonl (all lines), built in a temporary file."""
    import tempfile
    import zipfile

    client, token, job_id = request.app[CLIENT], bearer(request), request.match_info["job"]
    job = await client.get_batch(job_id, include_lines=True, token=token)
    folder = Path(request.app[SETTINGS].results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".batch-", suffix=".zip", dir=folder)
    try:
        with open(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            async for item in client.download_batch(job_id, token=token):
                if item.wav:
                    await asyncio.to_thread(zf.writestr, f"{item.result.uttid}.wav", item.wav)
            lines = "".join(json.dumps(batch_line_record(line), ensure_ascii=False) + "\n" for line in job.lines)
            zf.writestr("results.jsonl", lines)
        resp = web.StreamResponse(headers={"Content-Type": "application/zip",
                                           "Content-Disposition": f'attachment; filename="{job_id}.zip"'})
        resp.content_length = os.path.getsize(tmp)
        await resp.prepare(request)
        with open(tmp, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, 1 << 20):
                await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        os.unlink(tmp)


async def batch_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "batch.html")

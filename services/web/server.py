"""The web process: the WebUI (static page + a WebSocket that streams audio) and an HTTP/JSON API, OpenAI-compatible
``POST /v1/audio/speech`` included. It speaks to the gateway only through ``tts_client`` (tts.v1 over gRPC); the
gateway authenticates: a caller's ``Authorization: Bearer`` header is passed through, else TTS_WEB_TOKEN is used.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from shared.encodings import ENCODINGS
from tts_client.aio import AsyncTTSClient, TTSError, batch_line_record, make_config, to_dict

from .results import ResultStore
from .settings import WebSettings

log = logging.getLogger("web")
STATIC = Path(__file__).resolve().parent / "static"

CLIENT = web.AppKey("client", AsyncTTSClient)
SETTINGS = web.AppKey("settings", WebSettings)
RESULTS = web.AppKey("results", ResultStore)

# gRPC status (by name) → HTTP status
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
               "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409,
               "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
               "DEADLINE_EXCEEDED": 504}
ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
              404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error"}

# OpenAI's voice names mean "the server's default voice" here; model names map to the default engine
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
OPENAI_MODELS = {"", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
# OpenAI's response_format → the tts.v1 encoding the gateway produces (shared/encodings.py); mp3 is OpenAI's default
OPENAI_FORMATS = {"mp3": "MP3", "opus": "OGG_OPUS", "aac": "AAC", "flac": "FLAC", "wav": "WAV", "pcm": "LINEAR16"}
# the gateway's field names → the OpenAI request's
OPENAI_PARAMS = {"text": "input", "config.voice": "voice", "config.model": "model", "config.speed": "speed",
                 "config.sample_rate": "sample_rate", "config.encoding": "response_format"}


class HTTPError(Exception):
    """An error of ours (before the gateway is asked): status, message, the request field it names."""

    def __init__(self, status: int, message: str, param: str = ""):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def error_body(status: int, message: str, param: str = "", code: str = "") -> dict:
    return {"error": {"message": message, "type": ERROR_TYPE.get(status, "server_error"),
                      "param": param or None, "code": code or None}}


def error_response(exc: Exception, params: dict | None = None) -> web.Response:
    headers = {}
    if isinstance(exc, TTSError):
        status = HTTP_STATUS.get(exc.code, 500)
        param = (params or {}).get(exc.field, exc.field) if exc.field else ""
        message = exc.message
        if params and exc.field in params:   # name the caller's field, not the gateway's
            message = params[exc.field] + message[len(exc.field):]
        body = error_body(status, message, param, exc.code)
        if status == 429:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s or 1)))
        elif status == 503:
            headers["Retry-After"] = "1"
        elif status == 401:
            headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, HTTPError):
        status = exc.status
        body = error_body(status, f"{exc.param}: {exc.message}" if exc.param else exc.message, exc.param,
                          "INVALID_ARGUMENT" if status == 400 else "")
    else:
        status, body = 500, error_body(500, "internal error", code="INTERNAL")
    return web.json_response(body, status=status, headers=headers)


def bearer(request: web.Request, explicit: str = "") -> str:
    """The caller's token (header, or an explicit one from a WebSocket message), else the configured one."""
    header = request.headers.get("Authorization", "")
    if explicit:
        return explicit
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.app[SETTINGS].token.get_secret_value()


async def json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    return body


def get_field(body: dict, name: str, kind, default=None, required: bool = False):
    value = body.get(name, default)
    if value is None:
        if required:
            raise HTTPError(400, "is required", name)
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise HTTPError(400, f"must be a {kind.__name__}", name)
    return value


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except (TTSError, HTTPError) as exc:
        return error_response(exc, OPENAI_PARAMS if request.path.startswith("/v1/") else None)


# ---- pages ------------------------------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def livez(request: web.Request) -> web.Response:
    """The process answers: for liveness probes (a gateway outage must not restart web pods)."""
    return web.json_response({"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    state = await request.app[CLIENT].health()
    ok = state == "SERVING"
    return web.json_response({"status": "ok" if ok else "unavailable", "gateway": state}, status=200 if ok else 503)


# ---- JSON API for the page ----------------------------------------------------------------------------------------------
async def voices(request: web.Request) -> web.Response:
    items = await request.app[CLIENT].voices(token=bearer(request))
    return web.json_response({"voices": [to_dict(v) for v in items]})


async def analyze(request: web.Request) -> web.Response:
    body = await json_body(request)
    segments = await request.app[CLIENT].analyze(
        get_field(body, "text", str, required=True), get_field(body, "language", str, ""),
        get_field(body, "phoneme_mode", bool, False), token=bearer(request))
    return web.json_response({"segments": [to_dict(s) for s in segments]})


async def get_dictionary(request: web.Request) -> web.Response:
    return web.json_response(to_dict(await request.app[CLIENT].reload_dictionary(token=bearer(request))))


async def put_dictionary(request: web.Request) -> web.Response:
    body = await json_body(request)
    content = get_field(body, "content", str, required=True)
    return web.json_response(to_dict(await request.app[CLIENT].reload_dictionary(content, token=bearer(request))))


async def clear_cache(request: web.Request) -> web.Response:
    return web.json_response(to_dict(await request.app[CLIENT].clear_cache(token=bearer(request))))


async def result_file(request: web.Request) -> web.StreamResponse:
    path = request.app[RESULTS].path(request.match_info["rid"])
    if path is None:
        raise HTTPError(404, "no such result (results are kept for a while, newest first)", "id")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav",
                                           "Content-Disposition": f'attachment; filename="tts-{path.stem[:8]}.wav"'})


# ---- synthesis over a WebSocket (the page) -------------------------------------------------------------------------------
def config_from(start: dict, max_bytes: int):
    """The page's start message → SynthesisConfig (LINEAR16: the page plays raw PCM as it arrives)."""
    ref = b""
    if start.get("reference_audio_b64"):
        try:
            ref = base64.b64decode(get_field(start, "reference_audio_b64", str), validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(400, "is not valid base64", "reference_audio") from None
        if len(ref) > max_bytes:
            raise HTTPError(400, f"{len(ref)} bytes is over the limit of {max_bytes}", "reference_audio")
    seed = get_field(start, "seed", int)
    if seed is not None and seed < 0:
        raise HTTPError(400, "must be 0 or more", "seed")
    return make_config(
        voice=get_field(start, "voice", str, ""), reference_audio=ref,
        prompt_text=get_field(start, "prompt_text", str, ""), language=get_field(start, "language", str, ""),
        sample_rate=get_field(start, "sample_rate", int, 0), encoding="linear16",
        chunk_size=get_field(start, "chunk_size", int, 0), seed=seed, speed=get_field(start, "speed", float, 0.0),
        use_cache=get_field(start, "use_cache", bool), phoneme_mode=get_field(start, "phoneme_mode", bool, False),
        model=get_field(start, "model", str, ""))


async def ws_synthesize(request: web.Request) -> web.WebSocketResponse:
    """Protocol: the page sends one JSON ``{"type": "start", "text": ..., <config fields>, "token"?}``; the server
    answers ``{"type": "chunk", ...}`` + one binary frame of PCM16 LE per audio chunk, then ``{"type": "done",
    "summary", "result"}`` or ``{"type": "error", "status", "code", "message", "field"}``. ``{"type": "stop"}`` (or
    closing the socket) cancels the synthesis."""
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=2 * settings.max_upload_mb * 1024 * 1024)
    await ws.prepare(request)
    try:
        msg = await ws.receive(timeout=60)
    except asyncio.TimeoutError:
        await ws.close()
        return ws
    if msg.type != WSMsgType.TEXT:
        await ws.close()
        return ws
    try:
        start = json.loads(msg.data)
        if not isinstance(start, dict) or start.get("type") != "start":
            raise HTTPError(400, "the first message must be {\"type\": \"start\", ...}")
        text = get_field(start, "text", str, required=True)
        cfg = config_from(start, settings.max_upload_mb * 1024 * 1024)
        token = bearer(request, get_field(start, "token", str, ""))
    except (ValueError, HTTPError) as exc:
        err = exc if isinstance(exc, HTTPError) else HTTPError(400, "the start message is not valid JSON")
        await ws.send_json({"type": "error", "status": err.status, "code": "INVALID_ARGUMENT",
                            "field": err.param, "message": f"{err.param}: {err.message}" if err.param else err.message})
        await ws.close()
        return ws

    writer = request.app[RESULTS].writer()
    t0 = time.perf_counter()

    async def pump():
        first = None
        async for kind, item in request.app[CLIENT].stream([text], cfg, token=token):
            if kind == "audio":
                if first is None:
                    first = (time.perf_counter() - t0) * 1000
                await asyncio.to_thread(writer.write, item.audio, item.sample_rate)
                await ws.send_json({"type": "chunk", "sample_rate": item.sample_rate, "bytes": len(item.audio),
                                    "offset_ms": item.offset_ms, "duration_ms": item.duration_ms,
                                    "segment_index": item.segment_index, "segment_text": item.segment_text,
                                    "segment_end": item.segment_end, "first_chunk_ms": first})
                await ws.send_bytes(item.audio)
            else:
                rid = await asyncio.to_thread(writer.finish)
                await ws.send_json({"type": "done", "summary": to_dict(item), "first_chunk_ms": first,
                                    "result": {"id": rid, "url": f"/api/results/{rid}.wav", "bytes": writer.size}})

    async def listen():
        async for m in ws:            # "stop", or the socket closing, ends the synthesis
            if m.type == WSMsgType.TEXT and '"stop"' in m.data:
                return

    pumping, listening = asyncio.create_task(pump()), asyncio.create_task(listen())
    try:
        await asyncio.wait({pumping, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not pumping.done():
            pumping.cancel()
        try:
            await pumping
        except asyncio.CancelledError:
            if not ws.closed:
                await ws.send_json({"type": "stopped"})
        except TTSError as exc:
            log.info("synthesis failed", extra={"code": exc.code, "error": exc.message})
            if not ws.closed:
                await ws.send_json({"type": "error", "status": HTTP_STATUS.get(exc.code, 500), "code": exc.code,
                                    "field": exc.field, "message": exc.message,
                                    "retry_after_s": exc.retry_after_s})
        except ConnectionError:
            pass
    finally:
        listening.cancel()
        await asyncio.to_thread(writer.discard)
        if not ws.closed:
            await ws.close()
    return ws


# ---- OpenAI-compatible speech --------------------------------------------------------------------------------------------
async def openai_speech(request: web.Request) -> web.StreamResponse:
    """``POST /v1/audio/speech``: streams the audio (chunked) as it is synthesized, in ``response_format`` (mp3 by
    default; opus = Ogg/Opus, aac = ADTS, flac, pcm = raw PCM16; each streamed chunk is whole frames/pages). ``wav``
    is the exception: a WAV header states the length, so it is sent whole once synthesized (with Content-Length), and
    the file a client saves is right. Errors before the first audio get their HTTP status; an error after it cuts the
    chunked body short (no terminating chunk)."""
    body = await json_body(request)
    text = get_field(body, "input", str, required=True)
    if not text.strip():
        raise HTTPError(400, "is empty", "input")
    model = get_field(body, "model", str, "")
    voice = get_field(body, "voice", str, "")
    fmt = get_field(body, "response_format", str, "mp3").lower()
    if fmt not in OPENAI_FORMATS:
        raise HTTPError(400, f"{fmt!r} is not supported; use one of {', '.join(OPENAI_FORMATS)}", "response_format")
    encoding = ENCODINGS[OPENAI_FORMATS[fmt]]
    speed = get_field(body, "speed", float, 1.0)
    rate = get_field(body, "sample_rate", int, 24000)      # an extension; OpenAI's pcm is 24 kHz
    cfg = make_config(voice="" if voice in OPENAI_VOICES else voice, model="" if model in OPENAI_MODELS else model,
                      speed=speed, sample_rate=rate, encoding=encoding.name.lower())
    events = request.app[CLIENT].stream([text], cfg, token=bearer(request),
                                        request_id=request.headers.get("X-Request-Id", ""))
    try:
        kind, first = await events.__anext__()   # errors before any audio → a proper HTTP status (middleware)
    except StopAsyncIteration:
        raise HTTPError(502, "the gateway ended the stream without audio") from None
    headers = {"Content-Type": f"audio/pcm;rate={rate};encoding=signed-int;bits=16" if fmt == "pcm" else encoding.mime,
               "X-Sample-Rate": str(rate), "Cache-Control": "no-store"}
    if fmt == "wav":
        parts = [first.audio] if kind == "audio" else []
        try:
            async for kind, item in events:
                if kind == "audio":
                    parts.append(item.audio)
        finally:
            await events.aclose()
        return web.Response(body=encoding.complete_file(b"".join(parts), rate), headers=headers)
    resp = web.StreamResponse(status=200, headers=headers)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        if kind == "audio":
            await resp.write(first.audio)
        async for kind, item in events:
            if kind == "audio":
                await resp.write(item.audio)
    except TTSError as exc:
        log.warning("synthesis failed mid-stream; cutting the response short",
                    extra={"code": exc.code, "error": exc.message})
        raise ConnectionAbortedError(exc.message) from None
    finally:
        await events.aclose()
    await resp.write_eof()
    return resp


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
    data = await request.read()
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


# ---- app ---------------------------------------------------------------------------------------------------------------
def create_app(settings: WebSettings, client: AsyncTTSClient | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=2 * settings.max_upload_mb * 1024 * 1024)
    app[SETTINGS] = settings
    app[RESULTS] = ResultStore(settings.results_dir, settings.max_results)

    async def lifecycle(app):
        app[CLIENT] = client or AsyncTTSClient(settings.gateway_addr, timeout=settings.gateway_timeout_s)
        yield
        await app[CLIENT].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/api/voices", voices)
    app.router.add_post("/api/analyze", analyze)
    app.router.add_get("/api/dictionary", get_dictionary)
    app.router.add_put("/api/dictionary", put_dictionary)
    app.router.add_post("/api/cache/clear", clear_cache)
    app.router.add_get("/api/synthesize", ws_synthesize)
    app.router.add_get(r"/api/results/{rid:[0-9a-f]{32}}.wav", result_file)
    app.router.add_post("/v1/audio/speech", openai_speech)
    app.router.add_get("/batch", batch_page)
    app.router.add_post("/api/batches", batch_submit)
    app.router.add_get("/api/batches", batch_list)
    app.router.add_get("/api/batches/{job}", batch_get)
    app.router.add_post("/api/batches/{job}/cancel", batch_cancel)
    app.router.add_get("/api/batches/{job}/watch", batch_watch)
    app.router.add_get("/api/batches/{job}/download", batch_download)
    app.router.add_get("/api/batches/{job}/results/{uttid}.wav", batch_result)
    app.router.add_static("/static/", STATIC)
    return app


__all__ = ["create_app", "HTTP_STATUS"]

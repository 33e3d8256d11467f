"""The web process: the WebUI (static page + a WebSocket that streams audio) and an HTTP/JSON API, OpenAI-compatible
``POST /v1/audio/speech`` included. It speaks to the gateway only through ``tts_client`` (tts.v1 over gRPC); the
gateway authenticates: a caller's ``Authorization: Bearer`` header is passed through, else TTS_WEB_TOKEN is used.

Before any work: the Host header must be an allowed host; a browser's Origin (WebSocket, and every request that
changes state) must be this origin or an allowed one (no cross-site requests or WebSockets); bodies over their limit
are 413 from their Content-Length, before they are read; more than ``preauth_kb`` of a body (or reference audio on
the WebSocket) is read only once the caller's token has been checked with the gateway; JSON bodies need
``Content-Type: application/json`` (415) and big ones are parsed off the event loop. Results are kept per caller
(by a hash of the token) and served only to the same caller.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

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
TOKEN_CACHE = web.AppKey("token_cache", dict)

# gRPC status (by name) → HTTP status
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
               "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409,
               "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
               "DEADLINE_EXCEEDED": 504}
ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
              404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
              415: "invalid_request_error", 429: "rate_limit_error"}
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}")            # printable ASCII: anything else is no token of ours
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ADDRESS_RE = re.compile(r"(?:ipv[46]|unix|dns):[^\s,;)]+|\[[0-9a-fA-F:.]+\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
INT_LIMIT = 2**31 - 1
PREAUTH_CACHE_S = 60.0
WS_SEND_BUFFER = 64 * 1024

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


def scrub(message: str) -> str:
    """No peer address (ip:port, ipv4:/unix: targets) in a message that goes to a caller."""
    return _ADDRESS_RE.sub("<address>", message)


def error_response(exc: Exception, params: dict | None = None) -> web.Response:
    headers = {}
    if isinstance(exc, TTSError):
        status = HTTP_STATUS.get(exc.code, 500)
        param = (params or {}).get(exc.field, exc.field) if exc.field else ""
        message = scrub(exc.message)
        if exc.code == "RESOURCE_EXHAUSTED" and "larger than max" in message:
            status = 413                     # grpc's message size limit: too big, not "retry later"
        if params and exc.field in params:   # name the caller's field, not the gateway's
            message = params[exc.field] + message[len(exc.field):]
        body = error_body(status, message, param, exc.code)
        if status == 413:
            body = error_body(413, "the request is too large", param, "INVALID_ARGUMENT")
        elif status == 429:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s or 1)))
        elif status == 503:
            headers["Retry-After"] = "1"
        elif status == 401:
            headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, HTTPError):
        status = exc.status
        body = error_body(status, f"{exc.param}: {exc.message}" if exc.param else exc.message, exc.param,
                          "INVALID_ARGUMENT" if status in (400, 413, 415) else "")
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
    else:
        status, body = 500, error_body(500, "internal error", code="INTERNAL")
    return web.json_response(body, status=status, headers=headers)


def bearer(request: web.Request, explicit: str = "") -> str:
    """The caller's token (header, or an explicit one from a WebSocket message), else the configured one.
    A token that cannot be one (non-ASCII, control characters, empty) is 401 here, never a 500 further on."""
    header = request.headers.get("Authorization", "")
    token = None
    if explicit:
        token = explicit
    elif header.lower().startswith("bearer "):
        token = header[7:].strip()
    elif header:
        raise HTTPError(401, "the Authorization header must be 'Bearer <token>'")
    if token is None:
        return request.app[SETTINGS].token.get_secret_value()
    if not _TOKEN_RE.fullmatch(token):
        raise HTTPError(401, "the bearer token is not valid")
    return token


def request_id(request: web.Request) -> str:
    rid = request.headers.get("X-Request-Id", "")
    if rid and not _REQUEST_ID_RE.fullmatch(rid):
        raise HTTPError(400, "must be 1..128 characters of A-Z a-z 0-9 . _ : -", "X-Request-Id")
    return rid


def owner_of(token: str) -> str:
    """Results are kept per caller: a hash of the token that made them (never the token itself)."""
    return hashlib.sha256(b"tts-web-results\0" + token.encode()).hexdigest()[:32]


async def verify_token(request: web.Request, token: str) -> None:
    """Ask the gateway whether ``token`` is valid (cached a minute); raises its UNAUTHENTICATED (→ 401)."""
    cache: dict = request.app[TOKEN_CACHE]
    key = hashlib.sha256(token.encode()).digest()
    now = time.monotonic()
    if cache.get(key, 0) > now:
        return
    await request.app[CLIENT].voices(token=token)
    if len(cache) > 10000:
        cache.clear()
    cache[key] = now + PREAUTH_CACHE_S


async def read_body(request: web.Request, limit: int, field: str = "body") -> bytes:
    """The body, refused with 413 from its Content-Length before it is read; more than ``preauth_kb`` of it is read
    only after the caller's token was checked."""
    settings = request.app[SETTINGS]
    length = request.content_length
    if length is not None and length > limit:
        raise HTTPError(413, f"{length} bytes is over the limit of {limit}", field)
    if length is None or length > settings.preauth_kb * 1024:
        await verify_token(request, bearer(request))
    try:
        data = await request.content.read(limit + 1)
        while len(data) <= limit and not request.content.at_eof():
            more = await request.content.read(limit + 1 - len(data))
            if not more:
                break
            data += more
    except (web.HTTPRequestEntityTooLarge, ValueError):
        raise HTTPError(413, f"over the limit of {limit} bytes", field) from None
    if len(data) > limit:
        raise HTTPError(413, f"over the limit of {limit} bytes", field)
    return data


async def parse_json(data: bytes | str, what: str = "the request body"):
    """json.loads, off the event loop when big; deep nesting is a 400 like any other bad JSON."""
    try:
        if len(data) > 64 * 1024:
            return await asyncio.to_thread(json.loads, data)
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HTTPError(400, f"{what} is not valid JSON") from None


async def json_body(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise HTTPError(415, "the request body must be JSON sent with Content-Type: application/json")
    data = await read_body(request, request.app[SETTINGS].max_json_kb * 1024)
    body = await parse_json(data)
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
    if kind is int and name != "seed" and not -INT_LIMIT <= value <= INT_LIMIT:
        raise HTTPError(400, f"{value} is out of range", name)
    if kind is int and name == "seed" and not 0 <= value < 2**63:
        raise HTTPError(400, "must be in 0..2^63-1", name)
    if kind is float and not math.isfinite(value):
        raise HTTPError(400, "must be a finite number", name)
    return value


def _host_allowed(settings: WebSettings, host: str) -> bool:
    allowed = {h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()}
    if "*" in allowed:
        return True
    name = host.lower()
    if name.startswith("["):
        name = name[:name.find("]") + 1]
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return name in allowed


def _origin_allowed(request: web.Request, settings: WebSettings) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        # no browser sent this (browsers send Origin on WebSockets and cross-site POST/PUT); a fetch's metadata
        # still says when it is cross-site
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    allowed = {o.strip().rstrip("/").lower() for o in settings.allowed_origins.split(",") if o.strip()}
    if origin.lower() in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == (request.host or "").lower()


@web.middleware
async def guard_middleware(request: web.Request, handler):
    """Host allow-list on every request; same-origin (or an allowed Origin) on WebSockets and state changes."""
    settings = request.app[SETTINGS]
    if request.path not in ("/livez", "/healthz") and not _host_allowed(settings, request.host or ""):
        raise HTTPError(403, "this Host is not served here (TTS_WEB_ALLOWED_HOSTS)")
    changes_state = request.method not in ("GET", "HEAD", "OPTIONS")
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if (changes_state or upgrade) and not _origin_allowed(request, settings):
        raise HTTPError(403, "cross-origin request refused (TTS_WEB_ALLOWED_ORIGINS)")
    return await handler(request)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except (TTSError, HTTPError) as exc:
        return error_response(exc, OPENAI_PARAMS if request.path.startswith("/v1/") else None)
    except web.HTTPException as exc:         # aiohttp's own (no such route, wrong method, body too large): JSON too
        if exc.status < 400:
            raise
        status = 413 if exc.status == 413 else exc.status
        return web.json_response(error_body(status, exc.reason or "error"), status=status,
                                 headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})


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
    resp = await request.app[CLIENT].list_voices(token=bearer(request))
    return web.json_response({"voices": [to_dict(v) for v in resp.voices], "models": list(resp.models),
                              "default_model": resp.default_model})


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
    path = request.app[RESULTS].path(request.match_info["rid"], owner_of(bearer(request)))
    if path is None:
        raise HTTPError(404, "no such result (results are kept for a while, newest first)", "id")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav",
                                           "Content-Disposition": f'attachment; filename="tts-{path.stem[:8]}.wav"'})


# ---- synthesis over a WebSocket (the page) -------------------------------------------------------------------------------
async def decode_b64(value: str, max_bytes: int) -> bytes:
    if len(value) > (max_bytes + 2) // 3 * 4 + 4:
        raise HTTPError(413, f"over the limit of {max_bytes} bytes", "reference_audio")
    try:
        return await asyncio.to_thread(base64.b64decode, value, validate=True)    # off the event loop
    except (binascii.Error, ValueError):
        raise HTTPError(400, "is not valid base64", "reference_audio") from None


def config_from(start: dict, ref: bytes = b""):
    """The page's start message (+ its reference audio) → SynthesisConfig (LINEAR16: the page plays raw PCM)."""
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
    """Protocol: the page sends one JSON ``{"type": "start", "text": ..., <config fields>, "token"?,
    "reference_audio_bytes"?}`` (at most ``max_json_kb``), then, if it announced reference audio, that many bytes in
    binary frames (read only after the token was checked with the gateway); the server answers ``{"type": "chunk",
    ...}`` + one binary frame of PCM16 LE per audio chunk, then ``{"type": "done", "summary", "result"}`` or
    ``{"type": "error", "status", "code", "message", "field"}``. ``{"type": "stop"}`` (or closing the socket)
    cancels the synthesis; a reader that takes more than ``ws_send_timeout_s`` for a frame is dropped."""
    settings = request.app[SETTINGS]
    max_ref = settings.max_upload_mb * 1024 * 1024
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_s, max_msg_size=settings.max_json_kb * 1024)
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        # a small kernel send buffer (audio is ≤ 48 KB/s): a reader that stops reading blocks our sends within
        # seconds, so the send timeout below notices it (the default buffer grows to megabytes: minutes of audio)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SEND_BUFFER)
        except OSError:
            pass
    try:
        msg = await ws.receive(timeout=60)
    except asyncio.TimeoutError:
        await ws.close()
        return ws
    if msg.type != WSMsgType.TEXT:
        if msg.type == WSMsgType.ERROR or ws.close_code == 1009:
            await ws.close(code=1009, message=b"the start message is too big")
        await ws.close()
        return ws
    try:
        start = await parse_json(msg.data, "the start message")
        if not isinstance(start, dict) or start.get("type") != "start":
            raise HTTPError(400, "the first message must be {\"type\": \"start\", ...}")
        text = get_field(start, "text", str, required=True)
        token = bearer(request, get_field(start, "token", str, ""))
        announced = get_field(start, "reference_audio_bytes", int, 0)
        if not 0 <= announced <= max_ref:
            raise HTTPError(413, f"{announced} bytes is over the limit of {max_ref}", "reference_audio")
        b64 = get_field(start, "reference_audio_b64", str, "")
        if announced or len(msg.data) > settings.preauth_kb * 1024:
            await verify_token(request, token)          # before reading (or decoding) anything big
        ref = await decode_b64(b64, max_ref) if b64 else b""
        if announced:
            parts, got = [], 0
            while got < announced:
                m = await ws.receive(timeout=60)
                if m.type != WSMsgType.BINARY:
                    raise HTTPError(400, f"expected {announced} bytes of audio in binary frames, got {got}",
                                    "reference_audio")
                parts.append(m.data)
                got += len(m.data)
            if got != announced:
                raise HTTPError(400, f"{got} bytes sent, {announced} announced", "reference_audio")
            ref = b"".join(parts)
        if len(ref) > max_ref:
            raise HTTPError(413, f"{len(ref)} bytes is over the limit of {max_ref}", "reference_audio")
        cfg = config_from(start, ref)
    except (HTTPError, TTSError, asyncio.TimeoutError, ValueError) as exc:
        if isinstance(exc, TTSError):
            err = {"status": HTTP_STATUS.get(exc.code, 500), "code": exc.code, "field": exc.field,
                   "message": scrub(exc.message)}
        elif isinstance(exc, asyncio.TimeoutError):
            err = {"status": 408, "code": "INVALID_ARGUMENT", "field": "reference_audio",
                   "message": "reference_audio: the announced bytes did not arrive"}
        elif isinstance(exc, ValueError):
            err = {"status": 400, "code": "INVALID_ARGUMENT", "field": "", "message": str(exc)[:200]}
        else:
            err = {"status": exc.status, "code": "INVALID_ARGUMENT" if exc.status < 500 and exc.status != 401
                   else "UNAUTHENTICATED", "field": exc.param,
                   "message": f"{exc.param}: {exc.message}" if exc.param else exc.message}
        if not ws.closed:
            await ws.send_json({"type": "error", **err})
            await ws.close()
        return ws

    writer = request.app[RESULTS].writer(owner_of(token))
    t0 = time.perf_counter()
    send_timeout = settings.ws_send_timeout_s

    async def send(data) -> None:
        # a client that stops reading must not hold its synthesis (and its decoder slot) open: drop it
        if isinstance(data, bytes):
            await asyncio.wait_for(ws.send_bytes(data), send_timeout)
        else:
            await asyncio.wait_for(ws.send_json(data), send_timeout)

    async def pump():
        first = None
        events = request.app[CLIENT].stream([text], cfg, token=token)
        try:
            async for kind, item in events:
                if kind == "audio":
                    if first is None:
                        first = (time.perf_counter() - t0) * 1000
                    await asyncio.to_thread(writer.write, item.audio, item.sample_rate)
                    await send({"type": "chunk", "sample_rate": item.sample_rate, "bytes": len(item.audio),
                                "offset_ms": item.offset_ms, "duration_ms": item.duration_ms,
                                "segment_index": item.segment_index, "segment_text": item.segment_text,
                                "segment_end": item.segment_end, "first_chunk_ms": first})
                    await send(item.audio)
                else:
                    rid = await asyncio.to_thread(writer.finish)
                    await send({"type": "done", "summary": to_dict(item), "first_chunk_ms": first,
                                "result": {"id": rid, "url": f"/api/results/{rid}.wav", "bytes": writer.size}})
        finally:
            await events.aclose()      # a send that timed out leaves the stream suspended: end the call now

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
                                    "field": exc.field, "message": scrub(exc.message),
                                    "retry_after_s": exc.retry_after_s})
        except asyncio.TimeoutError:
            log.info("websocket reader too slow; synthesis cancelled", extra={"timeout_s": send_timeout})
        except ConnectionError:
            pass
    finally:
        listening.cancel()
        await asyncio.to_thread(writer.discard)
        if not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), send_timeout)      # a stalled reader may never take the close
            except asyncio.TimeoutError:
                pass
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
    events = request.app[CLIENT].stream([text], cfg, token=bearer(request), request_id=request_id(request))
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


# ---- app ---------------------------------------------------------------------------------------------------------------
def create_app(settings: WebSettings, client: AsyncTTSClient | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, guard_middleware],
                          client_max_size=max(settings.max_upload_mb * 1024, settings.max_json_kb) * 1024 + 4096)
    app[SETTINGS] = settings
    app[RESULTS] = ResultStore(settings.results_dir, settings.max_results)
    app[TOKEN_CACHE] = {}

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

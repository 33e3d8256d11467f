"""The middlewares every request passes: the request id (on every response as ``X-Request-Id``, in every log line),
callers that hang up (logged at INFO and counted, not an error), the Host allow-list and same-origin guard, and the
error mapping (our HTTPError, the gateway's TTSError and aiohttp's own errors → JSON bodies with their HTTP status)."""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from aiohttp import web

from shared.logging import request_id_var
from tts_client.aio import TTSError, forwarded_for

from .errors import HTTPError, error_body, error_response
from .hangups import client_gone, client_left
from .inputs import BAD_REQUEST_ID, REQUEST_ID, SETTINGS, new_request_id, valid_request_id
from .openai_api import OPENAI_PARAMS
from .settings import WebSettings

# ---- request id ------------------------------------------------------------------------------------------------------
@web.middleware
async def request_id_middleware(request: web.Request, handler):
    """The caller's ``X-Request-Id`` when it is a valid id, else a new one: kept on the request (a synthesis hands it
    to the gateway, whose logs and summary then use it), set for this request's log lines. ``add_request_id``
    puts it on the response."""
    sent = request.headers.get("X-Request-Id", "")
    if sent and not valid_request_id(sent):
        request[BAD_REQUEST_ID] = True       # a 400 where the id matters (/v1/audio/speech), ignored elsewhere
        sent = ""
    request[REQUEST_ID] = sent or new_request_id()
    request_id_var.set(request[REQUEST_ID])  # this request's task only (aiohttp runs each in its own)
    return await handler(request)


async def add_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response (audio, errors, pages, the WebSocket handshake) says its id."""
    if isinstance(request, web.Request) and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = request.get(REQUEST_ID) or new_request_id()


# ---- callers that hang up ---------------------------------------------------------------------------------------------
@web.middleware
async def disconnect_middleware(request: web.Request, handler):
    """aiohttp cancels a handler whose caller hung up (``handler_cancellation``, services/web/__main__.py): its
    synthesis (gRPC call) ends with it at once. A handler that noticed the hang-up itself (a write that failed) logs
    it with ``client_left`` and returns."""
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if client_gone(request):
            client_left(request)
        raise


# ---- guards and errors -----------------------------------------------------------------------------------------------
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
    # the gateway throttles failed authentications per client: ours, not this process's, named in x-forwarded-for
    forwarded_for.set(request.remote or "")
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
        resp = error_response(exc, OPENAI_PARAMS if request.path.startswith("/v1/") else None)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            resp.force_close()               # a refused WebSocket upgrade keeps no idle connection open
        return resp
    except web.HTTPException as exc:         # aiohttp's own (no such route, wrong method, body too large): JSON too
        if exc.status < 400:
            raise
        status = 413 if exc.status == 413 else exc.status
        return web.json_response(error_body(status, exc.reason or "error"), status=status,
                                 headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})

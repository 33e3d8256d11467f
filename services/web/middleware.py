"""The middlewares every request passes: the Host allow-list and same-origin guard, and the error mapping (our
HTTPError, the gateway's TTSError and aiohttp's own errors → JSON bodies with their HTTP status)."""
from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from tts_client.aio import TTSError, forwarded_for

from .errors import HTTPError, error_body, error_response
from .inputs import SETTINGS
from .openai_api import OPENAI_PARAMS
from .settings import WebSettings


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

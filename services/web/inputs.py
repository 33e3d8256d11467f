"""What a request brings, checked before any work: the caller's token, the request id, a body within its limit
(read past ``preauth_kb`` only once the token was checked with the gateway), JSON and its typed fields. Also the
application's keys (the gateway client, settings, result store, token cache)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
import uuid
from pathlib import Path

from aiohttp import web

from tts_client.aio import AsyncTTSClient

from .errors import HTTPError
from .results import ResultStore
from .settings import WebSettings

STATIC = Path(__file__).resolve().parent / "static"

CLIENT = web.AppKey("client", AsyncTTSClient)
SETTINGS = web.AppKey("settings", WebSettings)
RESULTS = web.AppKey("results", ResultStore)
TOKEN_CACHE = web.AppKey("token_cache", dict)
# per request (request[...]): its id, whether the caller's X-Request-Id was no valid id, the audio bytes written so
# far (handlers that stream audio), whether the caller's hang-up was logged
REQUEST_ID = "tts_request_id"
BAD_REQUEST_ID = "tts_bad_request_id"
SENT_BYTES = "tts_sent_bytes"
LEFT = "tts_client_left"


class PreauthGate:
    """Connections whose caller is not known yet (a WebSocket before its start message): at most ``limit`` at once,
    ``per_client`` per client address. Each may buffer up to a start message before its token is checked, so this
    bounds what unauthenticated callers can make the process hold. When the last one ends, the freed buffers are
    given back to the OS (``shared.memory.trim``)."""

    def __init__(self, limit: int, per_client: int, retry_after_s: float):
        self.limit, self.per_client, self.retry_after_s = limit, per_client, retry_after_s
        self.active = 0
        self.by_client: dict[str, int] = {}
        self.peak = 0
        self._trim = None

    def enter(self, client: str) -> "_PreauthSlot":
        mine = self.by_client.get(client, 0)
        if self.active >= self.limit or mine >= self.per_client:
            which = ("TTS_WEB_PREAUTH_PER_CLIENT" if mine >= self.per_client else "TTS_WEB_PREAUTH_CONNECTIONS")
            raise HTTPError(429, f"too many connections are waiting to send their start message ({which}); "
                                 f"retry in {self.retry_after_s:.0f} s, or authenticate with an Authorization header",
                            retry_after_s=self.retry_after_s)
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.by_client[client] = mine + 1
        return _PreauthSlot(self, client)

    def _leave(self, client: str) -> None:
        self.active -= 1
        left = self.by_client.get(client, 1) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)
        if self.active == 0 and self._trim is None:
            # once the handlers' buffers are released (the connection objects go when their tasks end)
            self._trim = asyncio.get_running_loop().call_later(0.5, self._trim_now)

    def _trim_now(self) -> None:
        from shared.memory import trim

        self._trim = None
        if self.active == 0:
            trim()


class _PreauthSlot:
    def __init__(self, gate: PreauthGate, client: str):
        self.gate, self.client, self.held = gate, client, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.gate._leave(self.client)


PREAUTH = web.AppKey("preauth", PreauthGate)

_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}")            # printable ASCII: anything else is no token of ours
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
INT_LIMIT = 2**31 - 1
PREAUTH_CACHE_S = 60.0


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


def valid_request_id(value: str) -> bool:
    return bool(_REQUEST_ID_RE.fullmatch(value))


def new_request_id() -> str:
    """As the gateway makes one up for a call that brings none (16 hex digits)."""
    return uuid.uuid4().hex[:16]


def request_id(request: web.Request, strict: bool = True) -> str:
    """This request's id (``middleware.request_id_middleware`` chose it: the caller's valid ``X-Request-Id``, else a
    new one); it goes to the gateway with the synthesis and back on the response. ``strict``: a caller's header that
    is no valid id is a 400 naming it (the id on that 400 is a new one)."""
    if strict and request.get(BAD_REQUEST_ID):
        raise HTTPError(400, "must be 1..128 characters of A-Z a-z 0-9 . _ : -", "X-Request-Id")
    return request.get(REQUEST_ID) or new_request_id()


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

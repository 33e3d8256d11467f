"""Errors as the web process's callers see them: gRPC status (by name) → HTTP status, OpenAI-style JSON bodies
(``{"error": {"message", "type", "param", "code"}}``), no peer address in any message."""
from __future__ import annotations

import math
import re

from aiohttp import web

from tts_client.aio import TTSError

# gRPC status (by name) → HTTP status
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
               "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409,
               "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
               "DEADLINE_EXCEEDED": 504}
ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
              404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
              415: "invalid_request_error", 429: "rate_limit_error"}
_TOO_BIG_RE = re.compile(r"the message is \d+ bytes")
_ADDRESS_RE = re.compile(r"(?:ipv[46]|unix|dns):[^\s,;)]+|\[[0-9a-fA-F:.]+\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")


class HTTPError(Exception):
    """An error of ours (before the gateway is asked): status, message, the request field it names."""

    def __init__(self, status: int, message: str, param: str = "", retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.retry_after_s = retry_after_s


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
        if exc.field == "request" and _TOO_BIG_RE.search(message):
            status = 413                     # over a message size limit: too big, not "retry later"
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
        elif status == 429:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s or 1)))
    else:
        status, body = 500, error_body(500, "internal error", code="INTERNAL")
    return web.json_response(body, status=status, headers=headers)

"""Errors of the tts.v1 API as plain Python: status code name, message, the field it names, the retry delay.

Callers that do not want to know gRPC (the web process) catch :class:`TTSError` only.
"""
from __future__ import annotations

import re

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class TTSError(Exception):
    def __init__(self, code: str, message: str, field: str = "", retry_after_s: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code                  # a grpc.StatusCode name: INVALID_ARGUMENT, UNAUTHENTICATED, ...
        self.message = message
        self.field = field                # INVALID_ARGUMENT: the field of its google.rpc.BadRequest ("config.speed")
        self.retry_after_s = retry_after_s  # RESOURCE_EXHAUSTED: when to retry


def _details(err: grpc.RpcError) -> list:
    """The google.rpc.Status details of a failed call (RetryInfo, BadRequest, ...); [] when it carries none."""
    try:
        status = rpc_status.from_call(err)
    except Exception:  # noqa: BLE001 - malformed or mismatched details are just no details
        return []
    return list(status.details) if status else []


def _unpack(details: list, kind):
    for detail in details:
        message = kind()
        if detail.Unpack(message):
            return message
    return None


def _retry_after(err: grpc.RpcError) -> float | None:
    for key, value in err.trailing_metadata() or ():
        if key == "retry-after-ms":
            try:
                return int(value) / 1000
            except (TypeError, ValueError):
                pass
    info = _unpack(_details(err), error_details_pb2.RetryInfo)
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9 if info else None


# gRPC's own size limit (a message over the server's transport cap, or over this client's send limit) answers
# RESOURCE_EXHAUSTED "Received/Sent message larger than max (N vs. M)", without a retry delay: no capacity problem
# that a retry could solve, but a request too big — reported as the server reports one under its cap
_GRPC_TOO_BIG = re.compile(r"(?:Received|Sent) message larger than max \((\d+) vs\. (\d+)\)")


def from_rpc_error(err: grpc.RpcError) -> TTSError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else "") or code.name
    field, retry = "", None
    too_big = _GRPC_TOO_BIG.search(message) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    if too_big:
        return TTSError("INVALID_ARGUMENT", f"request: the message is {too_big.group(1)} bytes; over the limit of "
                                            f"{too_big.group(2)} that gRPC enforces", "request")
    if code == grpc.StatusCode.INVALID_ARGUMENT and hasattr(err, "trailing_metadata"):
        bad = _unpack(_details(err), error_details_pb2.BadRequest)     # the field, from the status details
        field = bad.field_violations[0].field if bad and bad.field_violations else ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and hasattr(err, "trailing_metadata"):
        retry = _retry_after(err)
    return TTSError(code.name, message, field, retry)

"""Errors of the tts.v1 API as plain Python: status code name, message, the field it names, the retry delay.

Callers that do not want to know gRPC (the web process) catch :class:`TTSError` only.
"""
from __future__ import annotations

import re

import grpc

_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class TTSError(Exception):
    def __init__(self, code: str, message: str, field: str = "", retry_after_s: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code                  # a grpc.StatusCode name: INVALID_ARGUMENT, UNAUTHENTICATED, ...
        self.message = message
        self.field = field                # INVALID_ARGUMENT: the field the message starts with ("config.speed")
        self.retry_after_s = retry_after_s  # RESOURCE_EXHAUSTED: when to retry


def _retry_after(metadata) -> float | None:
    for key, value in metadata or ():
        if key == "retry-after-ms":
            try:
                return int(value) / 1000
            except (TypeError, ValueError):
                pass
    for key, value in metadata or ():
        if key == "grpc-status-details-bin":
            try:
                from google.rpc import error_details_pb2, status_pb2

                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    info = error_details_pb2.RetryInfo()
                    if detail.Unpack(info):
                        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            except Exception:  # noqa: BLE001 - a malformed detail is just no hint
                pass
    return None


def from_rpc_error(err: grpc.RpcError) -> TTSError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else "") or code.name
    field = ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        m = _FIELD.match(message)
        field = m.group(1) if m else ""
    retry = None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and hasattr(err, "trailing_metadata"):
        retry = _retry_after(err.trailing_metadata())
    return TTSError(code.name, message, field, retry)

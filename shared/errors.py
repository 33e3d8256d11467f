"""Exceptions that map to gRPC status codes (see shared.interceptors.ErrorInterceptor).

Engines raise these; servicers never build status codes by hand for ordinary errors.
"""
from __future__ import annotations

import re

import grpc

# peer addresses in grpc's connection errors ("ipv4:10.0.3.7:50054", "[::1]:50052", "10.0.3.7:50054")
_ADDRESS = re.compile(r"(?:ipv[46]|unix|dns):[^\s,;)]+|\[[0-9a-fA-F:.]+\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")


def scrub_addresses(message: str) -> str:
    """A stage's error text without peer addresses, before it goes to a caller (they stay in our logs)."""
    return _ADDRESS.sub("<address>", message)


class TTSError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(TTSError):
    """Bad input. The message names the field, e.g. ``config.sample_rate: 12345 is not supported``; the field and
    the description also travel as a google.rpc.BadRequest field violation in the status details."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.description = message


class NotFound(TTSError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(TTSError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(TTSError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TTSError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(TTSError):
    """Over a limit; the client should retry after ``retry_after_s``. ``answer_after_s``: the refusal is sent only
    after this long (a rate limit that slows a client ignoring its retry delay; the thrower bounds how many calls it
    holds and is told through ``on_answered`` when one is let go)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float = 1.0, answer_after_s: float = 0.0,
                 on_answered=None):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.answer_after_s = answer_after_s
        self.on_answered = on_answered


class Unavailable(TTSError):
    """A stage (or a dependency) is down. ``stage`` names it for the caller."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage} unavailable: {message}" if stage else message)
        self.stage = stage


class DeadlineExceeded(TTSError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class StageError(TTSError):
    """A stage answered with an error status; carried to our caller with the same code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def field_violation(trailing_metadata) -> tuple[str, str] | None:
    """(field, description) of the first google.rpc.BadRequest field violation in a call's status details."""
    from google.rpc import error_details_pb2, status_pb2

    for key, value in trailing_metadata or ():
        if key != "grpc-status-details-bin":
            continue
        try:
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad) and bad.field_violations:
                    return bad.field_violations[0].field, bad.field_violations[0].description
        except Exception:  # noqa: BLE001 - malformed details are just no field
            return None
    return None


def from_rpc_error(stage: str, err: grpc.aio.AioRpcError) -> TTSError:
    """Map a failed call to a stage into the error our own caller sees."""
    code = err.code()
    details = scrub_addresses(err.details() or code.name)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(stage, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{stage}: deadline exceeded")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = 1.0
        for key, value in err.trailing_metadata() or ():
            if key == "retry-after-ms":
                retry = int(value) / 1000
        return ResourceExhausted(f"{stage}: {details}", retry_after_s=retry)
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return StageError(grpc.StatusCode.INTERNAL, f"{stage}: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = field_violation(err.trailing_metadata())
        if violation:                               # the stage's field travels on to our caller
            return InvalidArgument(violation[0], scrub_addresses(violation[1]))
    return StageError(code, details)

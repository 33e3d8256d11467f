"""Exceptions that map to gRPC status codes (see shared.interceptors.ErrorInterceptor).

Engines raise these; servicers never build status codes by hand for ordinary errors.
"""
from __future__ import annotations

import grpc


class TTSError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(TTSError):
    """Bad input. The message names the field, e.g. ``config.sample_rate: 12345 is not supported``."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class NotFound(TTSError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(TTSError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(TTSError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TTSError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(TTSError):
    """Over a limit; the client should retry after ``retry_after_s``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(TTSError):
    """A stage (or a dependency) is down. ``stage`` names it for the caller."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage} unavailable: {message}" if stage else message)
        self.stage = stage


class DeadlineExceeded(TTSError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED

"""Shared-secret auth between the gateway and the internal stages.

When ``TTS_INTERNAL_TOKEN`` is set (every service's settings read it: ``ServiceSettings.internal_token``):
- every internal stage (frontend, speaker, decoder) rejects calls without metadata ``x-internal-token`` equal to it
  (constant-time compare) with UNAUTHENTICATED; grpc.health.v1 and reflection stay open (kubelet probes);
- the gateway sends that metadata on every stage call (``client_interceptors(token)`` on its channels).

The gateway's own public API is not affected (it authenticates tenants with bearer tokens). Unset = off (local dev,
tests). mTLS between pods (a service mesh, or grpc.ssl_server_credentials with client auth) is the alternative; see
docs/deploying.md.
"""
from __future__ import annotations

import hmac
import logging

import grpc
from pydantic import SecretStr

METADATA_KEY = "x-internal-token"
EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
PUBLIC_SERVICES = frozenset({"gateway"})   # serve() names whose API is public (tenant auth instead)

log = logging.getLogger("shared.internal_auth")


def _plain(token: SecretStr | str) -> str:
    return (token.get_secret_value() if isinstance(token, SecretStr) else token).strip()


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that ends the call with UNAUTHENTICATED."""

    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **kw)
    return grpc.stream_stream_rpc_method_handler(streaming, **kw)


class InternalTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        if not token:
            raise ValueError("empty internal token")
        self._token = token.encode()

    def _ok(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == METADATA_KEY:
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._token)
        return False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES) or self._ok(handler_call_details.invocation_metadata):
            return handler
        log.warning("internal call rejected", extra={"method": method})
        return _deny(handler, f"missing or wrong '{METADATA_KEY}' metadata (internal service; call the gateway)")


def server_interceptors(service: str, token: SecretStr | str) -> list[grpc.aio.ServerInterceptor]:
    """What ``serve()`` adds for ``service``: the token check for internal stages when a token is set."""
    token = _plain(token)
    if not token or service in PUBLIC_SERVICES:
        return []
    return [InternalTokenInterceptor(token)]


def _with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*[(k, v) for k, v in (details.metadata or ()) if k != METADATA_KEY])
    metadata.add(METADATA_KEY, token)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                      details.wait_for_ready)


class _TokenAdder:
    def __init__(self, token: str):
        self._token = token


class _UnaryUnary(_TokenAdder, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_with_token(client_call_details, self._token), request)


class _UnaryStream(_TokenAdder, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_with_token(client_call_details, self._token), request)


class _StreamUnary(_TokenAdder, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_token(client_call_details, self._token), request_iterator)


class _StreamStream(_TokenAdder, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_token(client_call_details, self._token), request_iterator)


def token_client_interceptors(token: str) -> list:
    """One interceptor per call kind (grpc.aio files each interceptor object under one kind only)."""
    return [cls(token) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


def client_interceptors(token: SecretStr | str) -> list:
    """For ``grpc.aio.*_channel(..., interceptors=...)``: empty when no token is set."""
    token = _plain(token)
    return token_client_interceptors(token) if token else []

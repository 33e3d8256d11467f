"""One interceptor that maps exceptions to gRPC status codes, records metrics and sets the log context.

- ``shared.errors.TTSError`` subclasses → their code and message (RESOURCE_EXHAUSTED carries a google.rpc.RetryInfo
  in ``grpc-status-details-bin`` and a plain ``retry-after-ms`` trailer).
- ``asyncio.CancelledError`` (client went away) propagates so the servicer's ``finally`` blocks free state.
- Anything else → INTERNAL with a generic message; the traceback goes to the log, never to the client.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from .errors import InvalidArgument, ResourceExhausted, TTSError
from .logging import request_id_var, tenant_var
from .metrics import RPC_ERRORS, RPC_IN_FLIGHT, RPC_LATENCY

log = logging.getLogger("shared.rpc")

EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


# A status travels in HTTP/2 trailers, and a receiver refuses trailers over its metadata limit (8 KiB by default)
# with RESOURCE_EXHAUSTED "received metadata size exceeds ...": an error message that echoed a long input came back as
# a capacity error (retried by clients) instead of itself. Every message and field description is cut to this many
# UTF-8 bytes (grpc-message percent-encodes non-ASCII: ≤ 3 × this; the details repeat message and description,
# base64: ≤ 2.7 × this), so the trailers of any status stay well under 8 KiB.
MAX_STATUS_MESSAGE_BYTES = 512


def cap_message(text: str, limit: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), marked with "…" when cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    cut = data[:limit - len("… (cut)".encode())].decode("utf-8", "ignore")
    return cut + "… (cut)"


def status_trailers(exc: TTSError) -> tuple:
    """RESOURCE_EXHAUSTED: a google.rpc.RetryInfo (and a plain retry-after-ms); INVALID_ARGUMENT naming a field:
    a google.rpc.BadRequest field violation. Both in grpc-status-details-bin, the message as in the status (both
    capped: ``MAX_STATUS_MESSAGE_BYTES``)."""
    status = status_pb2.Status(code=exc.code.value[0], message=cap_message(exc.message))
    if isinstance(exc, ResourceExhausted):
        seconds = max(exc.retry_after_s, 0.0)
        status.details.add().Pack(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))))
        return (("grpc-status-details-bin", status.SerializeToString()),
                ("retry-after-ms", str(int(seconds * 1000))))
    if isinstance(exc, InvalidArgument) and exc.field:
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=cap_message(exc.field, 128),
                                                        description=cap_message(exc.description))]))
        return (("grpc-status-details-bin", status.SerializeToString()),)
    return ()


def _forget_frames(exc: BaseException) -> None:
    """Drop the tracebacks of a mapped error and of the errors it was raised from (logged already, if at all).

    ``context.abort`` raises AbortError with this error as its context, and grpc keeps that in a reference cycle with
    its own frames; through the tracebacks the cycle held every frame of the failed call — the request, the reference
    audio, decoded blocks — until Python's cyclic GC ran (the speaker's RSS crept ~30 MB per refused 3 MB upload)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, service: str, method: str):
    if isinstance(exc, TTSError):
        code, message, trailers = exc.code, cap_message(exc.message), status_trailers(exc)
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
            log.warning("rpc failed", extra={"method": method, "code": code.name, "error": message})
    else:
        code, message, trailers = grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})", ()
        log.error("unhandled exception", exc_info=exc, extra={"method": method})
    RPC_ERRORS.labels(service, method, code.name).inc()
    _forget_frames(exc)
    if isinstance(exc, ResourceExhausted) and exc.answer_after_s > 0:
        try:
            await asyncio.sleep(exc.answer_after_s)      # a held refusal (bounded by whoever raised it)
        finally:
            if exc.on_answered is not None:
                exc.on_answered()
    await context.abort(code, message, trailing_metadata=trailers)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def invalid_utf8_field(descriptor, data: bytes, prefix: str = "") -> str | None:
    """Walk protobuf wire data and return the dotted name of the first string field holding invalid UTF-8."""
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                payload, pos = data[pos:pos + length], pos + length
                field = descriptor.fields_by_number.get(number)
                if field is None:
                    continue
                name = prefix + field.name
                if field.type == field.TYPE_STRING:
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        return name
                elif field.type == field.TYPE_MESSAGE:
                    found = invalid_utf8_field(field.message_type, payload, name + ".")
                    if found:
                        return found
            else:
                return None
    except ValueError:
        return None
    return None


class BadRequest:
    """Stands in for a request that could not be parsed, so the servicer side can answer INVALID_ARGUMENT."""

    def __init__(self, error: InvalidArgument):
        self.error = error


def checked_deserializer(deserializer, max_bytes: int = 0, setting: str = "max_message_mb"):
    if deserializer is None:
        return None
    message_cls = getattr(deserializer, "__self__", None)

    def parse(data: bytes):
        if max_bytes and len(data) > max_bytes:
            # too big is a bad request (never RESOURCE_EXHAUSTED, which clients retry), refused before parsing
            return BadRequest(InvalidArgument("request", f"the message is {len(data)} bytes; the limit is "
                                                         f"{max_bytes} ({setting})"))
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - DecodeError and friends
            field = invalid_utf8_field(message_cls.DESCRIPTOR, data) if message_cls is not None else None
            if field:
                return BadRequest(InvalidArgument(field, "is not valid UTF-8"))
            return BadRequest(InvalidArgument("request", "cannot be parsed as a protobuf message"))

    return parse


async def _checked_stream(requests):
    async for request in requests:
        if isinstance(request, BadRequest):
            raise request.error
        yield request


def _check(request):
    if isinstance(request, BadRequest):
        raise request.error
    return request


def _metadata(context) -> dict:
    return {k: v for k, v in (context.invocation_metadata() or ())}


EARLY_ERROR_DRAIN_S = 1.0      # the most an early rejection waits for the client's writes to settle
EARLY_ERROR_QUIET_S = 0.02     # ... and it waits only while they come back to back: a pause this long ends it


async def _drain(requests, timeout: float, quiet_s: float = EARLY_ERROR_QUIET_S) -> None:
    """Read and drop what the client is writing back to back, until it pauses for ``quiet_s``, half-closes, or
    ``timeout`` passes.

    A bidi call rejected before any response (auth, config, quota, capacity) while the client is still writing: if
    the status goes out while a write is in flight, grpc's aio client reports INTERNAL "Internal error from Core"
    instead of it (measured: 29 of 30 with writes back to back; 0 of 30 with a 50 ms pause between writes, as a chat
    model streams its text). Taking the messages already on their way lets the client finish its burst and read the
    real status; a client that streams at a pace gets it at its first pause, so a refusal is immediate (waiting for
    the whole text, up to ``timeout``, made every capacity refusal take about a second).
    """
    iterator = requests.__aiter__()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.wait_for(iterator.__anext__(), min(quiet_s, left))
    except Exception:  # noqa: BLE001 - the end: half-closed, a pause (timeout), reader busy elsewhere, broken call
        pass


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str, max_message_bytes: int = 0, max_message_setting: str = "max_message_mb"):
        self.service = service
        self.max_message_bytes = max_message_bytes
        self.max_message_setting = max_message_setting

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        short = method.rsplit("/", 1)[-1]
        service = self.service

        def enter(context):
            md = _metadata(context)
            request_id_var.set(md.get("x-request-id", ""))
            tenant_var.set(md.get("x-tenant", ""))
            RPC_IN_FLIGHT.labels(service).inc()
            return time.perf_counter()

        def leave(t0):
            RPC_IN_FLIGHT.labels(service).dec()
            RPC_LATENCY.labels(service, short).observe(time.perf_counter() - t0)

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request, context):
                t0 = enter(context)
                try:
                    if handler.unary_unary:
                        request = _check(request)
                    else:
                        request = _checked_stream(request)
                    return await inner(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status code
                    request = None                  # not held by the frame grpc keeps with the AbortError
                    await _abort(context, exc, service, short)
                finally:
                    leave(t0)

            factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return factory(unary_response, request_deserializer=checked_deserializer(handler.request_deserializer,
                                                                      self.max_message_bytes,
                                                                      self.max_message_setting),
                           response_serializer=handler.response_serializer)

        inner = handler.unary_stream or handler.stream_stream

        async def stream_response(request, context):
            t0 = enter(context)
            raw, answered = request, False
            try:
                request = _check(request) if handler.unary_stream else _checked_stream(request)
                async for item in inner(request, context):
                    answered = True
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status code
                if handler.stream_stream and not answered:
                    await _drain(raw, EARLY_ERROR_DRAIN_S)
                raw = request = None                # not held by the frame grpc keeps with the AbortError
                await _abort(context, exc, service, short)
            finally:
                leave(t0)

        factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return factory(stream_response, request_deserializer=checked_deserializer(handler.request_deserializer,
                                                                      self.max_message_bytes,
                                                                      self.max_message_setting),
                       response_serializer=handler.response_serializer)

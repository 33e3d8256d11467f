"""``serve()``: the one way every service runs.

grpc.aio server + the error interceptor + grpc.health.v1 (SERVING only after warm-up) + reflection + Prometheus
+ JSON logs + graceful SIGTERM (NOT_SERVING → drain in-flight RPCs for ``grace_seconds`` → stop).
A service whose engine dies (``watch``) turns NOT_SERVING at once and stays so: readiness drops the pod, liveness
restarts it (like TGI, a dead engine takes the process out of service instead of leaving it half alive).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from typing import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .interceptors import ErrorInterceptor
from .internal_auth import server_interceptors as internal_auth_interceptors
from .limits import KEEPALIVE_TIME_MS, transport_receive_limit
from .logging import setup_logging
from .metrics import start_metrics_server
from .settings import ServiceSettings

log = logging.getLogger("shared.serve")


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    size = settings.max_message_mb * 1024 * 1024
    return [
        # grpc's own limit (RESOURCE_EXHAUSTED, from the length prefix) sits at a hard cap far above ours
        # (shared/limits.py): a message between the two is read and refused by the error interceptor as
        # INVALID_ARGUMENT naming the limit
        ("grpc.max_receive_message_length", transport_receive_limit(size)),
        ("grpc.max_send_message_length", size),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


async def serve(
    name: str,
    settings: ServiceSettings,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    warmup: Callable[[], Awaitable[None] | None] | None = None,
    shutdown: Callable[[], Awaitable[None] | None] | None = None,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    ready: Callable[[int], None] | None = None,
    watch: Callable[[Callable[[str], None]], None] | None = None,
) -> None:
    """Run a service until SIGTERM/SIGINT.

    ``register(server)`` adds the servicers and returns their full service names (for health and reflection).
    ``warmup()`` loads models; health reports SERVING only after it returns. ``ready(port)`` is called once the
    server listens (tests use it with port 0). ``watch(out_of_service)`` is called before warm-up; the service
    calls ``out_of_service(reason)`` (from any thread) when it can no longer serve: health turns NOT_SERVING for good.
    """
    setup_logging(name, settings.log_level)
    settings.log_once(logging.getLogger(name))
    server = grpc.aio.server(interceptors=[*internal_auth_interceptors(name, settings.internal_token), *interceptors,
                                           ErrorInterceptor(name, settings.max_message_mb * 1024 * 1024,
                                                            f"TTS_{name.upper()}_MAX_MESSAGE_MB")],
                             options=server_options(settings))
    services = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    for svc in ["", *services]:
        await health_servicer.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
    loop = asyncio.get_running_loop()
    dead: list[str] = []

    async def not_serving():
        for svc in ["", *services]:
            await health_servicer.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)

    def out_of_service(reason: str) -> None:
        def mark():
            if not dead:
                dead.append(reason)
                log.critical("out of service", extra={"reason": reason})
                loop.create_task(not_serving())
        try:
            loop.call_soon_threadsafe(mark)
        except RuntimeError:          # the loop is closed: the process is stopping anyway
            pass

    if watch:
        watch(out_of_service)

    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise RuntimeError(f"{name}: cannot bind {settings.host}:{settings.port}")
    await server.start()
    start_metrics_server(settings.metrics_port, settings.host)
    log.info("listening", extra={"port": port, "metrics_port": settings.metrics_port})
    if ready:
        ready(port)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass

    try:
        if warmup:
            await _maybe_await(warmup())
        for svc in ["", *services]:
            if dead:
                break
            await health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
        if dead:                      # died during warm-up or while we were setting SERVING
            await not_serving()
        else:
            log.info("serving")
        await stop.wait()
    finally:
        log.info("draining", extra={"grace_seconds": settings.grace_seconds})
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.grace_seconds)
        if shutdown:
            await _maybe_await(shutdown())
        log.info("stopped")

"""Prometheus metrics common to all services (``tts_`` prefix). Stage-specific metrics live with each stage."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_LATENCY = Histogram(
    "tts_rpc_duration_seconds", "RPC duration", ["service", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RPC_ERRORS = Counter("tts_rpc_errors_total", "RPCs that ended with an error status", ["service", "method", "code"])
RPC_IN_FLIGHT = Gauge("tts_rpc_in_flight", "RPCs being served", ["service"])


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    if port > 0:
        start_http_server(port, addr=host)

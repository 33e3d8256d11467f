"""Failed-authentication flood (issue 23 #11): one client sends bad tokens as fast as it can (``--attackers`` threads,
ignoring any retry delay) while another tenant, from another address, calls AnalyzeText; printed per mode: the
flood's calls/s and how many reached the token check, and the other tenant's p50/p95 latency.

Modes: no flood; flood with the throttle off (TTS_GATEWAY_AUTH_FAILURES_PER_CLIENT=0, _PER_PREFIX=0); flood with the
throttle on (the defaults). Starts its own redis-server, frontend and gateway on loopback for each mode; the other
tenant goes through a relay that dials the gateway from 127.0.0.2 (the flood comes from 127.0.0.1).

    flock /tmp/heavy.lock .venv/bin/python -m bench.bench_auth_flood --seconds 10
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from services.gateway.auth import hash_token
from tests.e2e.test_adversarial import Relay
from tests.procs import RedisServer, make_stack
from tts.v1 import tts_pb2, tts_pb2_grpc

TOKEN = "tok-bob-" + secrets.token_hex(16)


def flood(addr: str, stop, counts, me: int) -> None:
    """One attacker process: bad tokens back to back, any answer ignored (retry delays included)."""
    mine: dict[str, int] = {}
    with grpc.insecure_channel(addr) as ch:
        call = tts_pb2_grpc.TextToSpeechStub(ch).AnalyzeText
        while not stop.is_set():
            try:
                call(tts_pb2.AnalyzeTextRequest(text="好"),
                     metadata=(("authorization", "Bearer " + secrets.token_hex(16)),), timeout=10)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            mine[code] = mine.get(code, 0) + 1
    for code, n in mine.items():
        counts[me, code] = n


def measure(mode: str, seconds: float, attackers: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    store = RedisServer(log_dir=tmp, policy="noeviction").start()
    env = {"TTS_GATEWAY_REDIS_URL": store.url, "TTS_GATEWAY_TOKENS": f"bob:{hash_token(TOKEN)}",
           "TTS_GATEWAY_RATE_PER_TENANT": 0}
    if mode == "flood, throttle off":
        env.update(TTS_GATEWAY_AUTH_FAILURES_PER_CLIENT=0, TTS_GATEWAY_AUTH_FAILURES_PER_PREFIX=0)
    stack = make_stack(tmp, start=("frontend", "gateway"), **env)
    relay = Relay("127.0.0.2", stack.gateway.port)
    ctx = mp.get_context("spawn")                 # no fork of a process holding gRPC channels
    stop, manager = ctx.Event(), ctx.Manager()
    counts = manager.dict()
    try:
        with relay.channel() as ch:
            call = tts_pb2_grpc.TextToSpeechStub(ch).AnalyzeText
            md = (("authorization", f"Bearer {TOKEN}"),)
            for _ in range(20):                                  # warm
                call(tts_pb2.AnalyzeTextRequest(text="好"), metadata=md, timeout=10)
            procs = [ctx.Process(target=flood, args=(stack.gateway.addr, stop, counts, i), daemon=True)
                     for i in range(attackers if mode != "no flood" else 0)]
            for p in procs:
                p.start()
            latencies, t0 = [], time.monotonic()
            while time.monotonic() - t0 < seconds:
                s = time.perf_counter()
                call(tts_pb2.AnalyzeTextRequest(text="好"), metadata=md, timeout=10)
                latencies.append(time.perf_counter() - s)
            elapsed = time.monotonic() - t0
            stop.set()
            for p in procs:
                p.join(15)
            outcomes: dict[str, int] = {}
            for (_, code), n in counts.items():
                outcomes[code] = outcomes.get(code, 0) + n
            manager.shutdown()
    finally:
        relay.close()
        stack.stop()
        store.stop()
    total = sum(outcomes.values())
    return {"mode": mode, "flood_per_s": total / elapsed, "checked_per_s": outcomes.get("UNAUTHENTICATED", 0) / elapsed,
            "throttled": outcomes.get("RESOURCE_EXHAUSTED", 0), "p50_ms": statistics.median(latencies) * 1000,
            "p95_ms": float(np.percentile(latencies, 95)) * 1000, "n": len(latencies)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--attackers", type=int, default=2)
    args = ap.parse_args()
    rows = [measure(m, args.seconds, args.attackers) for m in ("no flood", "flood, throttle off", "flood, throttle on")]
    print(f"| mode | flood calls/s | token checks/s | refused as throttled | other tenant p50 / p95 ms (n) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['flood_per_s']:.0f} | {r['checked_per_s']:.1f} | {r['throttled']} | "
              f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} ({r['n']}) |")


if __name__ == "__main__":
    main()

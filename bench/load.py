"""Load and soak against the gateway: N concurrent bidirectional streams for M minutes, text sent in pieces as an
LLM emits it.

    make load                     # against `make run` (localhost:50051): 4 streams x 1 minute
    make soak                     # the same, then checks that RSS, open fds, Redis keys and decoder state come back
    .venv/bin/python -m bench.load --streams 8 --minutes 5 [--soak] [--own-stack] [--target host:port]

Env defaults: LOAD_STREAMS (4), LOAD_MINUTES (1), TTS_GATEWAY (localhost:50051), TTS_TOKEN.
``--own-stack`` starts redis-server and the four services on free loopback ports (as the e2e tests do) instead of
using `make run`'s; the PIDs for the soak checks then come from those processes, else from .run/*.pid.
Prints a table: first-chunk latency p50/p95/p99 (client side: first text piece sent → first audio received), the
server's first-chunk figure, RTF, streams/s, errors by status code; with --soak, pass/fail per check. Never part of
`make test`.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import grpc

from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client.client import make_config

REPLIES = [
    "您好，请问有什么可以帮您？我这边可以帮您查询订单、修改地址，或者转接人工客服。",
    "好的，您的订单已经在2026年1月13日发出，预计三天内送达，快递单号是SF1234567890。",
    "今天北京晴，气温-3℃到5℃，空气质量良好，适合外出，但早晚温差较大，请注意保暖。",
    "这款手机的价格是¥3999，支持5G网络和快速充电，现在下单还可以享受十二期免息。",
    "我用iPhone 15打了110，对方说会在十分钟之内赶到现场，请您不要着急。",
    "The meeting has been moved to 3:30 PM on Friday, and Dr. Smith will join remotely.",
]
REF = ROOT / "tests" / "data" / "BAC009S0764W0121.wav"


def pieces(text: str, rng: random.Random):
    """An LLM's tokens: 1-4 characters at a time."""
    i = 0
    while i < len(text):
        n = rng.randint(1, 4)
        yield text[i:i + n]
        i += n


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.first_ms: list[float] = []
        self.server_first_ms: list[float] = []
        self.rtf: list[float] = []
        self.audio_s = 0.0
        self.ok = 0
        self.errors: Counter = Counter()
        self.examples: dict[str, str] = {}
        self.voice_ops = 0

    def error(self, err: grpc.RpcError) -> None:
        with self.lock:
            self.errors[err.code().name] += 1
            self.examples.setdefault(err.code().name, (err.details() or "")[:160])


def one_stream(stub, metadata, text: str, rng: random.Random, token_interval_s: float, stats: Stats) -> None:
    sent_first: list[float] = []

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=make_config())
        for piece in pieces(text, rng):
            if not sent_first:
                sent_first.append(time.perf_counter())
            yield tts_pb2.StreamingSynthesizeRequest(text=piece)
            time.sleep(token_interval_s)        # the LLM's pace (pacing a load generator, not synchronisation)

    t0 = time.perf_counter()
    first = None
    summary = None
    try:
        for resp in stub.StreamingSynthesize(requests(), metadata=metadata, timeout=120):
            if resp.WhichOneof("response") == "audio":
                if first is None:
                    first = time.perf_counter() - sent_first[0]
            else:
                summary = resp.summary
    except grpc.RpcError as err:
        stats.error(err)
        return
    wall = time.perf_counter() - t0
    with stats.lock:
        stats.ok += 1
        stats.first_ms.append(first * 1000 if first is not None else float("nan"))
        if summary is not None and summary.audio_ms:
            stats.server_first_ms.append(summary.first_chunk_latency_ms)
            stats.rtf.append(wall / (summary.audio_ms / 1000))
            stats.audio_s += summary.audio_ms / 1000


def voice_roundtrip(stub, metadata, stats: Stats) -> None:
    """Soak: exercise the speaker and the Redis registry too (register, list, delete)."""
    try:
        resp = stub.RegisterVoice(tts_pb2.RegisterVoiceRequest(name="soak", audio=REF.read_bytes()),
                                  metadata=metadata, timeout=60)
        stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=metadata, timeout=30)
        stub.DeleteVoice(tts_pb2.DeleteVoiceRequest(id=resp.voice.id), metadata=metadata, timeout=30)
        with stats.lock:
            stats.voice_ops += 1
    except grpc.RpcError as err:
        stats.error(err)


def run_load(target: str, token: str, streams: int, seconds: float, token_interval_s: float, soak: bool,
             per_worker: int | None = None) -> Stats:
    stats = Stats()
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    deadline = time.monotonic() + seconds

    def worker(k: int):
        rng = random.Random(k)
        with grpc.insecure_channel(target) as ch:
            stub = tts_pb2_grpc.TextToSpeechStub(ch)
            n = 0
            while time.monotonic() < deadline if per_worker is None else n < per_worker:
                one_stream(stub, metadata, REPLIES[(k + n) % len(REPLIES)], rng, token_interval_s, stats)
                n += 1
                if soak and n % 5 == 1:
                    voice_roundtrip(stub, metadata, stats)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(streams)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats.elapsed = time.monotonic() - t0
    return stats


def print_table(stats: Stats, streams: int, target: str) -> None:
    total = stats.ok + sum(stats.errors.values())
    rows = [
        ("target", target),
        ("concurrent streams", streams),
        ("duration", f"{stats.elapsed:.0f} s"),
        ("streams completed / failed", f"{stats.ok} / {sum(stats.errors.values())}"),
        ("streams/s", f"{total / stats.elapsed:.2f}"),
        ("audio produced", f"{stats.audio_s:.0f} s ({stats.audio_s / stats.elapsed:.2f} s of audio per s)"),
        ("first chunk p50 / p95 / p99 (client)",
         " / ".join(f"{pct(stats.first_ms, p):.0f}" for p in (50, 95, 99)) + " ms"),
        ("first chunk p50 / p95 / p99 (server summary)",
         " / ".join(f"{pct(stats.server_first_ms, p):.0f}" for p in (50, 95, 99)) + " ms"),
        ("RTF p50 / p95 (wall incl. LLM pacing / audio)", f"{pct(stats.rtf, 50):.2f} / {pct(stats.rtf, 95):.2f}"),
        ("voice register/list/delete round trips", stats.voice_ops),
        ("errors by code", ", ".join(f"{k} {v}" for k, v in sorted(stats.errors.items())) or "none"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for code, msg in stats.examples.items():
        print(f"  e.g. {code}: {msg}")


# ---- soak: process and state checks -------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_pids() -> dict[str, int]:
    out = {}
    for name in ("gateway", "frontend", "speaker", "decoder", "redis"):
        f = ROOT / ".run" / f"{name}.pid"
        if f.exists():
            pid = int(f.read_text().strip())
            if Path(f"/proc/{pid}").exists():
                out[name] = pid
    return out


def redis_keys(url: str) -> tuple[int, int]:
    import redis

    r = redis.Redis.from_url(url, socket_timeout=2)
    total = r.dbsize()
    voices = sum(1 for _ in r.scan_iter("tts:voice*", count=1000))
    r.close()
    return total, voices


def decoder_state(addr: str) -> dict:
    with grpc.insecure_channel(addr) as ch:
        resp = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=5)
    return {"active": sum(e.active_streams for e in resp.engines), "cache": sum(e.cache_bytes for e in resp.engines),
            "buffered": sum(e.buffered_bytes for e in resp.engines)}


def snapshot(pids: dict[str, int], redis_url: str, decoder_addr: str) -> dict:
    snap = {"rss": {n: rss_kb(p) for n, p in pids.items()}, "fds": {n: fds(p) for n, p in pids.items()}}
    snap["redis_total"], snap["redis_voices"] = redis_keys(redis_url)
    snap["decoder"] = decoder_state(decoder_addr)
    return snap


def settle(decoder_addr: str, timeout: float = 60) -> None:
    """Bounded wait until the decoder has no stream open (the last ones are being torn down)."""
    end = time.monotonic() + timeout
    while decoder_state(decoder_addr)["active"] and time.monotonic() < end:
        time.sleep(0.2)


def soak_checks(before: dict, after: dict) -> list[tuple[str, bool, str]]:
    checks = []
    for name, kb in before["rss"].items():
        grown = after["rss"][name] - kb
        limit = max(kb * 0.25, 64 * 1024)            # allocator high-water marks stay; leaks grow past this
        checks.append((f"{name} RSS", grown <= limit,
                       f"{kb / 1024:.0f} → {after['rss'][name] / 1024:.0f} MB (limit +{limit / 1024:.0f} MB)"))
    for name, n in before["fds"].items():
        checks.append((f"{name} open fds", after["fds"][name] <= n + 4, f"{n} → {after['fds'][name]} (limit +4)"))
    checks.append(("redis voice keys back to baseline", after["redis_voices"] == before["redis_voices"],
                   f"{before['redis_voices']} → {after['redis_voices']}"))
    checks.append(("redis total keys (+1 cached embedding of the soak's reference allowed)",
                   after["redis_total"] <= before["redis_total"] + 1,
                   f"{before['redis_total']} → {after['redis_total']}"))
    d0, d1 = before["decoder"], after["decoder"]
    checks.append(("decoder streams closed", d1["active"] == 0, f"active {d0['active']} → {d1['active']}"))
    checks.append(("decoder cache bytes back to baseline", d1["cache"] <= d0["cache"], f"{d0['cache']} → {d1['cache']}"))
    checks.append(("decoder buffered audio back to 0", d1["buffered"] == 0, f"{d0['buffered']} → {d1['buffered']}"))
    return checks


def own_stack():
    """The whole system started here (tests/procs.py ``make_stack``), logs in a temp folder."""
    import tempfile

    from tests.procs import make_stack

    tmp = Path(tempfile.mkdtemp(prefix="tts-load-"))
    stack = make_stack(tmp)
    print(f"own stack: gateway {stack.gateway.addr}, logs in {tmp}")
    return stack


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default=os.environ.get("TTS_GATEWAY", "localhost:50051"))
    ap.add_argument("--token", default=os.environ.get("TTS_TOKEN", ""))
    ap.add_argument("--streams", type=int, default=int(os.environ.get("LOAD_STREAMS", 4)))
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("LOAD_MINUTES", 1)))
    ap.add_argument("--token-interval-ms", type=float, default=30.0, help="pause between text pieces (LLM pace)")
    ap.add_argument("--soak", action="store_true", help="also check that resources return to baseline")
    ap.add_argument("--own-stack", action="store_true", help="start redis + the services on free ports")
    ap.add_argument("--redis-url", default=os.environ.get("TTS_GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--decoder", default=os.environ.get("TTS_LOAD_DECODER", "127.0.0.1:50054"))
    args = ap.parse_args()

    own = own_stack() if args.own_stack else None
    try:
        target = own.gateway.addr if own else args.target
        redis_url = own.redis.url if own else args.redis_url
        decoder = own.decoder.addr if own else args.decoder
        pids = own.pids() if own else run_pids()
        before = None
        if args.soak:
            if not pids:
                print("soak: no PIDs (start `make run` or use --own-stack)")
                return 2
            # warm up first (models, caches, allocator pools for every reply's length), so the baseline is warm
            print("soak: warming up ...", flush=True)
            run_load(target, args.token, args.streams, 0, args.token_interval_ms / 1000, soak=True,
                     per_worker=max(1, -(-len(REPLIES) // args.streams)))
            settle(decoder)
            before = snapshot(pids, redis_url, decoder)
        print(f"load: {args.streams} streams x {args.minutes:g} min against {target} ...", flush=True)
        stats = run_load(target, args.token, args.streams, args.minutes * 60, args.token_interval_ms / 1000,
                         soak=args.soak)
        print_table(stats, args.streams, target)
        failed = bool(stats.errors)
        if args.soak:
            settle(decoder)
            after = snapshot(pids, redis_url, decoder)
            print("\n  soak checks")
            for name, ok, detail in soak_checks(before, after):
                print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
                failed = failed or not ok
        return 1 if failed else 0
    finally:
        if own:
            own.stop()


if __name__ == "__main__":
    sys.exit(main())

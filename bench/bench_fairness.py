"""Fair share between tenants, as a caller hears it: alice's LLM-paced streams alone, then the same streams while bob
keeps N streams busy and runs a batch job, on one decoder pod of a private stack with auth on.

    make bench-fairness                       # N = 24 of bob's streams, alice 4 streams, a 12-line batch job
    .venv/bin/python -m bench.bench_fairness [--bob 24] [--alice 4] [--batch-lines 12] [--model fastspeech2]

Prints, for alice alone and alice beside bob: first audio p50/p95 (from her first text piece), stall time / audio
time, refusals; bob's streams served and refused (and why); the batch job's lines done / failed and its time.
Target (issue 23): alice's first audio and stall figures within 10 % of alice alone; every batch line done.
Holds /tmp/bench.lock (no other benchmark on the cores). Never part of `make test`.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

import shared  # noqa: F401  (generated stubs)
from bench.bench_stream import LOCK, REPLIES, Result, one_stream, pct, together
from services.gateway.auth import hash_token
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client import TTSClient

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("alice", "bob")}


def stack(args, tmp: Path):
    from tests.procs import make_stack

    return make_stack(tmp, timeout=300, TTS_DECODER_ENGINES=args.engines, TTS_DECODER_DEFAULT_ENGINE=args.model,
                      TTS_GATEWAY_TOKENS=",".join(f"{t}:{hash_token(tok)}" for t, tok in TOKENS.items()),
                      TTS_GATEWAY_MAX_STREAMS_PER_TENANT=0, TTS_GATEWAY_RATE_PER_TENANT=0,
                      TTS_GATEWAY_BATCH_OUTPUT_DIR=tmp / "out", TTS_GATEWAY_BATCH_MAX_JOBS_PER_TENANT=4)


def alice_round(target: str, args, offset: int) -> list[Result]:
    def stream(k, start):
        with grpc.insecure_channel(target) as ch:
            return one_stream(tts_pb2_grpc.TextToSpeechStub(ch), REPLIES[(offset + k) % len(REPLIES)], offset + k,
                              args.pace_ms / 1000, 1, 3, args.model, start, 120,
                              metadata=(("authorization", f"Bearer {TOKENS['alice']}"),))

    return together(args.alice, stream)


class Bob:
    """N streams that keep going (one reply after another) until stopped; counts served and refused."""

    def __init__(self, target: str, args):
        self.target, self.args = target, args
        self.stop = threading.Event()
        self.served = self.refused = self.errors = 0
        self.reasons: dict[str, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(k,), daemon=True) for k in range(args.bob)]

    def _loop(self, k: int) -> None:
        go = threading.Event()
        go.set()
        n = 0
        with grpc.insecure_channel(self.target) as ch:
            stub = tts_pb2_grpc.TextToSpeechStub(ch)
            while not self.stop.is_set():
                r = one_stream(stub, REPLIES[(k + n) % len(REPLIES)], 1000 + k * 100 + n, self.args.pace_ms / 1000,
                               1, 3, self.args.model, go, 120,
                               metadata=(("authorization", f"Bearer {TOKENS['bob']}"),))
                n += 1
                with self.lock:
                    if r.refused_after_s is not None:
                        self.refused += 1
                        why = (r.refused_reason or "?").split(":")[0]
                        self.reasons[why] = self.reasons.get(why, 0) + 1
                    elif r.error:
                        self.errors += 1
                    else:
                        self.served += 1
                if r.refused_after_s is not None:
                    self.stop.wait(0.5)            # a refused client waits a moment before trying again

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def figures(results: list[Result]) -> dict:
    served = [x for x in results if x.first_audio_s is not None and x.error is None]
    first = [x.first_audio_s * 1000 for x in served]
    audio = sum(x.clock.audio_s for x in served)
    return {"streams": len(results), "served": len(served),
            "refused": sum(x.refused_after_s is not None for x in results),
            "errors": sum(bool(x.error) for x in results),
            "first_p50": pct(first, 50), "first_p95": pct(first, 95),
            "stall_share": sum(x.clock.stall_s for x in served) / audio if audio else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bob", type=int, default=24, help="bob's concurrent streams")
    ap.add_argument("--alice", type=int, default=4, help="alice's concurrent streams")
    ap.add_argument("--rounds", type=int, default=3, help="alice's rounds per phase")
    ap.add_argument("--batch-lines", type=int, default=12)
    ap.add_argument("--pace-ms", type=float, default=50.0)
    ap.add_argument("--model", default="fastspeech2")
    ap.add_argument("--engines", default="fastspeech2")
    args = ap.parse_args()

    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = Path(tempfile.mkdtemp(prefix="tts-bench-fair-"))
        s = stack(args, tmp)
        try:
            target = s.gateway.addr
            print(f"bench-fairness: model {args.model}, 1 decoder pod, {os.cpu_count()} CPUs, "
                  f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
            alice_round(target, args, offset=0)                       # warm-up
            alone = []
            for r in range(args.rounds):
                alone += alice_round(target, args, offset=r * args.alice)
            bob_client = TTSClient(target, token=TOKENS["bob"], timeout=60)
            lines = "\n".join(json.dumps({"uttid": f"u{i}", "syn_text": REPLIES[i % len(REPLIES)]}, ensure_ascii=False)
                              for i in range(args.batch_lines)).encode()
            with Bob(target, args) as bob:
                time.sleep(3.0)                 # bob's streams fill the pod (a load generator's ramp, not sync)
                job = bob_client.submit_batch(jsonl=lines, config=tts_pb2.SynthesisConfig(model=args.model))
                t_job = time.perf_counter()
                beside = []
                for r in range(args.rounds):
                    beside += alice_round(target, args, offset=r * args.alice)
                final = None
                for ev in bob_client.watch_batch(job.id, timeout=600):
                    final = ev.job
                job_s = time.perf_counter() - t_job
            a, b = figures(alone), figures(beside)
            print(f"{'alice':<22} {'streams':>7} {'refused':>7} {'first audio p50/p95 ms':>23} {'stall s/audio s':>15}")
            for name, f in (("alone", a), (f"beside bob ({args.bob})", b)):
                print(f"{name:<22} {f['streams']:>7} {f['refused']:>7} {f['first_p50']:>11.0f} / "
                      f"{f['first_p95']:<9.0f} {f['stall_share']:>15.2%}")
            ratio = b["first_p50"] / a["first_p50"] if a["first_p50"] else float("nan")
            print(f"alice beside bob / alone, first audio p50: {ratio:.2f}x (target <= 1.10)")
            print(f"bob: {bob.served} replies served, {bob.refused} refused {bob.reasons}, {bob.errors} errors")
            print(f"batch ({args.batch_lines} lines): {final.done if final else '?'} done, "
                  f"{final.failed if final else '?'} failed, {job_s:.1f} s")
            print(f"(load average {os.getloadavg()[0]:.1f} at the end)")
            return 0
        finally:
            s.stop()


if __name__ == "__main__":
    sys.exit(main())

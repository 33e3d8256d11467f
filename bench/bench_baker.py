"""Baker voice (FastSpeech2 + MB-MelGAN) speed, PyTorch eager vs onnxruntime, one thread each:
the acoustic model on a ~6 s sentence, a 10-frame vocoder chunk with 19 frames of mel context each side, and
the compute seconds per audio second of the two together (acoustic + every 10-frame chunk).

    .venv/bin/python -m bench.bench_baker [--repeats 10] [--threads 1] [--onnx-dir models/fastspeech2]

Holds an exclusive lock on /tmp/bench.lock (the README's benchmark lock) while it measures. The ONNX export is
taken from --onnx-dir when current, else written to a temporary folder first.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "tests/data/baker-reference"
LOCK = "/tmp/bench.lock"
CHUNK, CONTEXT = 10, 19


@contextlib.contextmanager
def bench_lock(path: str = LOCK):
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {path} (another benchmark holds it)", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sentence(target_s: float = 6.0) -> tuple[np.ndarray, str]:
    """The vendored pack case whose audio is nearest ``target_s`` seconds: its ids and text."""
    index = json.loads((PACK / "index.json").read_text())
    best = min(index, key=lambda e: abs(e["frames"] * 0.0125 - target_s))
    return np.load(PACK / best["file"])["input_ids"], best["text"]


def median_ms(fn, repeats: int) -> float:
    fn()                                       # first call: allocations, graph warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def measure(voice, ids: np.ndarray, repeats: int) -> dict:
    mel, _ = voice.acoustic(ids)
    acoustic_ms = median_ms(lambda: voice.acoustic(ids), repeats)
    mid = len(mel) // 2 - CHUNK // 2             # an interior chunk: full context both sides
    chunk_ms = median_ms(lambda: voice.vocode_chunk(mel, mid, mid + CHUNK, CONTEXT), repeats * 5)
    whole_ms = median_ms(lambda: voice.vocode(mel), max(3, repeats // 2))
    audio_s = len(mel) * voice.hop / voice.sample_rate
    chunks = math.ceil(len(mel) / CHUNK)
    return {"frames": len(mel), "audio_s": audio_s, "acoustic_ms": acoustic_ms, "chunk_ms": chunk_ms,
            "whole_vocode_ms": whole_ms, "rtf": (acoustic_ms + chunks * chunk_ms) / 1000 / audio_s}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_baker", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--onnx-dir", default=None, help="an ONNX export (default models/fastspeech2, else a temp one)")
    args = p.parse_args(argv)

    from services.decoder.engine.fastspeech2.model import DEFAULT_ONNX_DIR, BakerVoice, find_assets
    from services.decoder.engine.fastspeech2.onnx_export import prepare, valid_stamp

    ids, text = sentence()
    with bench_lock(), tempfile.TemporaryDirectory() as tmp:
        onnx_dir = Path(args.onnx_dir or DEFAULT_ONNX_DIR)
        if not valid_stamp(onnx_dir, find_assets()):
            onnx_dir = prepare(Path(tmp) / "onnx")
        load_before = os.getloadavg()
        rows = []
        for backend in ("torch", "onnx"):
            voice = BakerVoice.load(backend=backend, threads=args.threads, onnx_dir=str(onnx_dir))
            rows.append((backend, measure(voice, ids, args.repeats)))
        load_after = os.getloadavg()

    r = rows[0][1]
    print(f"sentence: {text} ({len(ids)} ids, {r['frames']} frames, {r['audio_s']:.2f} s); threads {args.threads}; "
          f"chunk {CHUNK} frames + {CONTEXT}+{CONTEXT} context\n")
    print("| backend | acoustic ms (sentence) | ms per 10-frame chunk | whole-sentence vocoder ms "
          "| compute s per audio s | load average (1 min) before / after |")
    print("|---|---|---|---|---|---|")
    for backend, r in rows:
        print(f"| {backend} | {r['acoustic_ms']:.1f} | {r['chunk_ms']:.2f} | {r['whole_vocode_ms']:.1f} | "
              f"{r['rtf']:.3f} | {load_before[0]:.2f} / {load_after[0]:.2f} |")


if __name__ == "__main__":
    main()

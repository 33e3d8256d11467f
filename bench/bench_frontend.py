"""Text frontend latency: per-sentence analyze() p50/p95 (cold vs warm) and streaming time-to-first-segment.

Run: .venv/bin/python -m bench.bench_frontend [--n 300]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEMPLATES = [
    "今天是{y}年{m}月{d}日，气温{t}℃，适合出门散步。",
    "我用iPhone {n}打了{phone}，对方说银行明天不营业。",
    "这件衣服原价¥{money}元，现在打{pct}%的折扣，真的很便宜。",
    "Dr. Smith paid ${money} for {n} GPUs on {m}/{d}/{y}.",
    "请不要重复我说的话，这一点很重要，一个字也不能错。",
    "The meeting starts at {h}:30 pm and lasts about {n} minutes.",
    "他流血了，我们赶紧送他去医院，路程大约{n}公里。",
    "我们要学习AI和machine learning，这是一个很长的过程。",
    "展览馆里有{n}幅画，你好老虎，不对不是这样的。",
    "It is {t} degrees outside, so take a coat and an umbrella.",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        out.append(rnd.choice(TEMPLATES).format(
            y=rnd.randint(1990, 2030), m=rnd.randint(1, 12), d=rnd.randint(1, 28), t=rnd.randint(-10, 35),
            n=rnd.randint(1, 999), phone=rnd.choice(["110", "13812345678", "400-800-1234"]),
            money=f"{rnd.randint(1, 9999)}.{rnd.randint(0, 99):02d}", pct=rnd.randint(5, 95), h=rnd.randint(1, 12)))
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def row(name, ms):
    print(f"{name:<34} {len(ms):>5} {statistics.median(ms):>9.2f} {pct(ms, 0.95):>9.2f} {max(ms):>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    t0 = time.perf_counter()
    from services.frontend.engine import FrontendEngine

    eng = FrontendEngine(os.path.join(ROOT, "configs/G2P_replace_dict.jsonl"))
    t_import = (time.perf_counter() - t0) * 1000
    sents = sentences(args.n)

    t0 = time.perf_counter()
    eng.analyze(sents[0])
    cold_first = (time.perf_counter() - t0) * 1000

    cold = []
    for s in sents:                      # first pass: per-word caches (pinyin, CMUdict, sandhi) still cold
        t = time.perf_counter()
        eng.analyze(s)
        cold.append((time.perf_counter() - t) * 1000)
    warm = []
    for s in sents:
        t = time.perf_counter()
        eng.analyze(s)
        warm.append((time.perf_counter() - t) * 1000)
    ttfs = []
    for s in sents:                      # streaming: 2-char pieces, time until the first segment comes out
        st = eng.stream()
        t = time.perf_counter()
        got = False
        for i in range(0, len(s), 2):
            if st.push(s[i:i + 2]):
                got = True
                break
        if not got:
            st.flush()
        ttfs.append((time.perf_counter() - t) * 1000)

    print(f"engine construction (imports + dictionary): {t_import:.0f} ms")
    print(f"first analyze() (loads jieba, pypinyin, wetext, cmudict): {cold_first:.0f} ms\n")
    print(f"{'case':<34} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    row("analyze, first pass (cold caches)", cold)
    row("analyze, second pass (warm)", warm)
    row("stream, CPU until first segment", ttfs)


if __name__ == "__main__":
    main()

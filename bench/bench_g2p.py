"""Polyphone accuracy on the CPP dev split (bench/data/cpp-dev, see its README for provenance): the reading of the one
annotated character, compared BEFORE tone sandhi (the gold labels are dictionary tones).

Rows: plain pypinyin (whole sentence, its own phrase matching), g2pM alone (the PyPI package's own inference), the
g2pM network alone through our numpy inference (restricted to the character's readings), and our frontend's G2P
(jieba words + pypinyin phrase table with sub-word fallback + the network + our context rules), which is what the
service says. Run: make bench-g2p  (or .venv/bin/python bench/bench_g2p.py [--limit N])
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import shared  # noqa: E402,F401

DATA = os.path.join(ROOT, "bench", "data", "cpp-dev")


def load(limit: int | None):
    with open(os.path.join(DATA, "dev.sent"), encoding="utf-8") as f:
        sents = f.read().splitlines()
    with open(os.path.join(DATA, "dev.lb"), encoding="utf-8") as f:
        gold = f.read().splitlines()
    assert len(sents) == len(gold), "dev.sent and dev.lb differ in length"
    out = []
    for s, g in zip(sents, gold):
        i = s.index("▁")
        out.append((s.replace("▁", ""), i, g.strip().replace("u:", "v")))
    return out[:limit] if limit else out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    cases = load(args.limit or None)

    from g2pM import G2pM
    from pypinyin import Style, lazy_pinyin

    from services.frontend.engine.dictionary import ReplaceDictionary
    from services.frontend.engine.g2p import G2P
    from services.frontend.engine.polyphone import model

    net = model()
    g2p = G2P()
    g2p.warmup()
    empty = ReplaceDictionary()
    g2pm = G2pM()

    def plain(text, i):
        return lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True,
                           errors=lambda s: [""] * len(s))[i]

    def g2pm_alone(text, i):
        return g2pm(text, char_split=True)[i].replace("u:", "v")

    def net_alone(text, i):
        return net.predict(text, [i])[0][0] if net.is_polyphonic(text[i]) else plain(text, i)

    def ours(text, i):
        for w in g2p.words(text, empty):
            if w.lang == "zh" and w.span[0] <= i < w.span[1]:
                return w.citation[i - w.span[0]]
        return ""

    systems = [("plain pypinyin 0.55 (lazy_pinyin)", plain), ("g2pM 0.1.2.5 alone (its own inference)", g2pm_alone),
               ("g2pM network, our numpy inference", net_alone), ("our frontend G2P (what the service says)", ours)]
    print(f"CPP dev split: {len(cases)} sentences, accuracy of the annotated character before tone sandhi\n")
    print(f"{'system':<44} {'correct':>8} {'accuracy':>9} {'ms/sent':>8}")
    wrong = collections.Counter()
    for name, fn in systems:
        ok = 0
        t0 = time.perf_counter()
        for text, i, gold in cases:
            r = fn(text, i)
            ok += r == gold
            if fn is ours and r != gold:
                wrong[text[i]] += 1
        ms = (time.perf_counter() - t0) * 1000 / len(cases)
        print(f"{name:<44} {ok:>8} {100 * ok / len(cases):>8.2f}% {ms:>8.2f}")
    print("\nour most frequent misses (character: count):",
          ", ".join(f"{c}: {n}" for c, n in wrong.most_common(15)))


if __name__ == "__main__":
    main()

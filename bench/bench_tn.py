"""Chinese text normalization on the public zh suites of NeMo-text-processing and WeTextProcessing (bench/data/tn-public,
provenance in bench/data/README.md): strict pass rate per file, for normalize() and for the whole engine (what the
service says: segmentation, language choice per segment, normalization).

Strict = the output equals the expected text exactly (Latin case and whitespace included). Every other case is
printed: either under one of the documented CONVENTIONS we accept (the expected text and ours differ only in that
convention), or as FAIL. Nothing is skipped. Run: make bench-tn  (or .venv/bin/python bench/bench_tn.py [--quiet])
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import shared  # noqa: E402,F401

DATA = os.path.join(ROOT, "bench", "data", "tn-public")

# name → (why we accept it, a function mapping a text to its convention-free form). A case passes under a
# convention when the two forms agree after applying that convention (and the earlier ones) to both sides.
def _strip_punct(s):
    return re.sub(r"[\s,.!?:;\"'，。！？：；“”‘’、]", "", s)


CONVENTIONS = [
    ("<oov> tags", "the wetext tagger wraps out-of-vocabulary characters in <oov> tags; we leave them as they are",
     lambda s: re.sub(r"</?oov>", "", s)),
    ("二/两", "两 before a measure word (两年后) or 二 — both are read right; wetext says 二 in some places",
     lambda s: s.replace("两", "二")),
    ("号/日", "dates end in 日 or 号 (八月八号): both are spoken Mandarin", lambda s: re.sub(r"(?<=[一二三四五六七八九十])号", "日", s)),
    ("元/人民币", "￥ is read 元 (the everyday word), some suites say 人民币", lambda s: s.replace("人民币", "元")),
    ("幺/一", "a digit string read with 一 or with 幺", lambda s: s.replace("幺", "一")),
    ("千克/公斤", "kg read 千克 or 公斤", lambda s: s.replace("公斤", "千克")),
    ("零 in times", "03:04 read 三点零四分 or 三点四分", lambda s: re.sub(r"点零(?=[一二三四五六七八九])", "点", s)),
    ("上午/下午 for am/pm", "10:04am read 上午十点零四分 (a suite keeps the Latin 'am' after the time)",
     lambda s: re.sub(r"上午|下午|[ap]\.?m\.?", "", s, flags=re.I)),
    ("零下/负 for temperatures", "-23°C read 零下二十三摄氏度 (weather usage) or 负二十三摄氏度",
     lambda s: s.replace("零下", "负")),
    ("公里/千米", "km read 公里 (everyday) or 千米", lambda s: s.replace("千米", "公里")),
    ("零一十/零十", "a 10 after a zero inside a number: 一百亿零一十万 (wetext's style, ours) or 一百亿零十万",
     lambda s: s.replace("零一十", "零十")),
    ("punctuation", "full-width punctuation kept (the wetext suite converts it to ASCII); no effect on speech",
     _strip_punct),
    ("Latin case", "letters keep the case they were written in (ATM/Atm are spelled alike)", lambda s: s.upper()),
    ("fillers/erhua kept", "we keep 儿, 呃, 啊 (the wetext suite removes them with its optional filters); TTS should "
     "say what the text says", lambda s: re.sub("[儿呃啊]", "", s)),
    ("traditional characters", "kept as written (pypinyin reads them); the wetext suite converts to simplified",
     lambda s: s.translate(str.maketrans("寶貝", "宝贝"))),
]


def load_cases():
    out = []
    for path in sorted(glob.glob(os.path.join(DATA, "*", "*.txt"))):
        suite = os.path.basename(os.path.dirname(path))
        name = f"{suite}/{os.path.basename(path)}"
        with open(path, encoding="utf-8") as f:
            for k, line in enumerate(f.read().splitlines(), 1):
                if not line.strip():
                    continue
                sep = "~" if suite == "nemo" else " =>"     # "儿 =>": the expected output is empty
                if sep not in line:
                    raise SystemExit(f"{name}:{k}: no {sep!r} separator: {line!r}")
                inp, _, exp = line.partition(sep)
                out.append((name, k, inp if suite == "nemo" else inp.rstrip(), exp.strip()))
    return out


def judge(expected: str, got: str) -> str | None:
    """None = strict pass; else the name of the convention that makes them agree, or "FAIL"."""
    if got == expected:
        return None
    a, b = expected, got
    for name, _why, fn in CONVENTIONS:
        a, b = fn(a), fn(b)
        if a == b:
            return name
    return "FAIL"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quiet", action="store_true", help="tables only, no per-case lines")
    args = ap.parse_args()
    from services.frontend.engine import FrontendEngine
    from services.frontend.engine.normalize import normalize

    eng = FrontendEngine(None)
    eng.warmup()
    systems = {"normalize()": lambda t: normalize(t, "zh"),
               "engine": lambda t: "".join(s.normalized for s in eng.analyze(t)) if t.strip() else ""}
    cases = load_cases()
    results: dict[str, dict[str, list]] = {s: {} for s in systems}
    for sname, fn in systems.items():
        for name, k, inp, exp in cases:
            got = fn(inp)
            results[sname].setdefault(name, []).append((k, inp, exp, got, judge(exp, got)))
    for sname in systems:
        print(f"\n== {sname}: strict pass rate per file (conventions accepted: see below) ==")
        print(f"{'file':<32} {'cases':>6} {'strict':>7} {'strict %':>9} {'+conv':>6} {'fail':>5}")
        tot = [0, 0, 0, 0]
        for name, rows in results[sname].items():
            n = len(rows)
            strict = sum(r[4] is None for r in rows)
            conv = sum(r[4] not in (None, "FAIL") for r in rows)
            fail = sum(r[4] == "FAIL" for r in rows)
            tot = [tot[0] + n, tot[1] + strict, tot[2] + conv, tot[3] + fail]
            print(f"{name:<32} {n:>6} {strict:>7} {100 * strict / n:>8.1f}% {conv:>6} {fail:>5}")
        print(f"{'ALL':<32} {tot[0]:>6} {tot[1]:>7} {100 * tot[1] / tot[0]:>8.1f}% {tot[2]:>6} {tot[3]:>5}")
    print("\nconventions we accept (a case counts under the first that makes expected and ours agree):")
    for name, why, _fn in CONVENTIONS:
        print(f"  - {name}: {why}")
    if not args.quiet:
        for sname in systems:
            print(f"\n== {sname}: every case that is not a strict pass ==")
            for name, rows in results[sname].items():
                for k, inp, exp, got, verdict in rows:
                    if verdict is not None:
                        print(f"  {verdict:<22} {name}:{k}  {inp!r} → {got!r}  (expected {exp!r})")


if __name__ == "__main__":
    main()

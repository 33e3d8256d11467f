"""glmtts decoder benchmark (``make bench-decoder [DEVICE=cpu|cuda] [SIZE=50m|10m|full]``), on a random checkpoint in
the published layout (written on first use; SIZE=full = the published sizes, 1.5B LLM, for a GPU).

Prints, from one run:
  1. LM decoding speed for 500 speech tokens with the paged KV cache vs without (full recompute each step), and
     with the per-stream step it replaced (``reference.py``);
  2. LM decoding through the scheduler with 1, 2, 4, 8, 16, 32 concurrent streams (1, 4, 16, 64 for SIZE=full):
     per-stream and total tok/s and the time of one LM pass, for the paged step (batched sampling) and the
     per-stream step (``reference.PerStreamLM``: per-stream attention and per-stream sampling, the pass as it was
     before the paged step), one after the other at each concurrency in the same run (``--scheduler-only``: this
     section alone);
  3. time to the first audio chunk of a stream (prefill + first chunk of tokens + flow + vocoder);
  4. per-stream decoding speed through the whole engine (continuous batching; the acoustic worker renders audio at
     the same time), first chunk and peak device memory per row;
  5. the token rate of decoding streams while new cloned voices' prompts are built (off the LM thread), as a share
     of their rate without;
  6. streaming fidelity vs latency per block/look-ahead policy: the mel distance to the offline (full-attention)
     render at block ends on the reference pack's flow inputs (tests/data/glmtts-reference/flow, official random
     weights; target <= 0.1), the tokens before the first chunk, and the first-chunk latency through the engine.
Targets on a 2-core machine: >= 45 tok/s with the cache, >= 5x the no-cache speed; 4 streams >= 25 tok/s each;
>= 80 % of the token rate kept while prompts are built; total tok/s at 8 and 16 streams >= 1.5x the per-stream
step's, one stream not slower.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import numpy as np
import torch

from services.decoder.engine.base import SegmentInput, StreamOptions, Voice
from services.decoder.engine.glmtts.checkpoint import (
    Layout, write_published_size_checkpoint, write_tiny_checkpoint)
from services.decoder.engine.glmtts.device import pick_device
from services.decoder.engine.glmtts.engine import GLMTTSEngine
from services.decoder.engine.glmtts.lm import SamplingParams, SpeechLM
from services.decoder.engine.glmtts.prompt import GLMTTSLayout, Prompt
from services.decoder.engine.glmtts.reference import PerStreamLM
from services.decoder.engine.glmtts.scheduler import Scheduler, Segment, StreamState
from services.decoder.engine.glmtts.settings import GLMTTSSettings

DEVICE, DTYPE = torch.device("cpu"), torch.float32       # set from the command line in main()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _peak_reset() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats(DEVICE)


def _peak_mb() -> float:
    return torch.cuda.max_memory_allocated(DEVICE) / 2**20 if DEVICE.type == "cuda" else float("nan")


def lm_speed(path: Path, n_tokens: int) -> tuple[float, float, float]:
    layout = Layout.of(path)
    lm = SpeechLM.load(layout.llm, layout.tokenizer, DEVICE, DTYPE)
    prompt = lm.encode_text("您好，这里是客服中心，请问有什么可以帮您？") + [lm.boa]
    lm.allocate_cache(lm.blocks_for(len(prompt) + n_tokens))
    params = SamplingParams()

    def cached(model=lm) -> float:
        gen = torch.Generator().manual_seed(0)
        kv, feed, out = model.new_cache(), prompt, []
        t0 = time.perf_counter()
        for _ in range(n_tokens):
            tok = lm.sample(model.packed_forward([(kv, feed)])[0], out, params, gen, allow_end=False)
            out.append(tok)
            feed = [lm.ats + tok]
        kv.free()
        return n_tokens / (time.perf_counter() - t0)

    def uncached() -> float:
        gen = torch.Generator().manual_seed(0)
        seq, out = list(prompt), []
        t0 = time.perf_counter()
        for _ in range(n_tokens):
            tok = lm.sample(lm.full_forward(seq), out, params, gen, allow_end=False)
            out.append(tok)
            seq.append(lm.ats + tok)
        _sync()
        return n_tokens / (time.perf_counter() - t0)

    cached()                                   # warm-up (allocator, kernels)
    per_stream = PerStreamLM(lm)
    runs = [(cached(), cached(per_stream)) for _ in range(2)]        # interleaved: the machine's load drifts
    return max(r[0] for r in runs), uncached(), max(r[1] for r in runs)


class _CountingSink:
    """Stands in for the acoustic worker: takes each chunk and lets the stream run on at once."""

    def __init__(self):
        self.scheduler = None
        self.done: dict[int, threading.Event] = {}
        self.finished_at: dict[int, float] = {}

    def chunk(self, st, seg_index, tokens, final, max_len):
        self.scheduler.consumed(st)

    def end(self, st):
        self.finished_at[st.id] = time.perf_counter()
        self.done[st.id].set()

    def fail(self, st, exc):
        self.done[st.id].set()


def scheduler_runs(path: Path, tokens_per_stream: int, concurrency: list[int]):
    """LM decoding through the pod's scheduler (continuous batching) with audio rendering left out; for each
    concurrency the paged step and the per-stream step run one after the other (same machine state)."""
    layout = Layout.of(path)
    lm = SpeechLM.load(layout.llm, layout.tokenizer, DEVICE, DTYPE)
    lm.allocate_cache(max(concurrency) * lm.blocks_for(2048))
    text_ids = lm.encode_text("您好，请问有什么可以帮您")
    ratio = tokens_per_stream / len(text_ids)
    prompt = Prompt(text_ids=lm.encode_text("参考文本 "), speech_tokens=list(range(100, 150)), feat=None,
                    embedding=torch.zeros(1, 192, device=DEVICE, dtype=DTYPE))
    scheds = {}
    for name, model in (("paged", lm), ("per-stream", PerStreamLM(lm))):
        sched = Scheduler(model, GLMTTSLayout(lm.boa, lm.ats, min_ratio=ratio, max_ratio=ratio),
                          max_tokens_per_stream=2048)
        sink = _CountingSink()
        sink.scheduler = sched
        sched.start()
        scheds[name] = (sched, sink)
    rows = []
    sid = 0

    def one_run(name: str, n: int):
        nonlocal sid
        sched, sink = scheds[name]
        states = []
        t0 = time.perf_counter()
        steps0 = sched.steps
        for i in range(n):
            sid += 1
            st = StreamState(sid, [15, 25, 50], SamplingParams(), i, True, sink, 4, prompt=prompt)
            sink.done[sid] = threading.Event()
            states.append(st)
            sched.add(st)
            sched.feed(st, Segment(index=0, text_ids=list(text_ids)))
            sched.end(st)
        for st in states:
            sink.done[st.id].wait(1800)
        ends = [sink.finished_at[st.id] - t0 for st in states]
        total = sum(st.tokens_total for st in states)
        passes = max(1, sched.steps - steps0)
        for st in states:
            sched.remove(st)
        return min(st.tokens_total / end for st, end in zip(states, ends)), total / max(ends), max(ends) / passes, \
            total / passes

    for name in scheds:
        one_run(name, 1)                         # warm-up
    for n in concurrency:
        rows.append((n, one_run("paged", n), one_run("per-stream", n)))
    for sched, _ in scheds.values():
        sched.stop()
    return rows


PACK_FLOW = ROOT / "tests" / "data" / "glmtts-reference" / "flow"
# (name, flow blocks, look-ahead): the engine's default (settings), the one before it, and no look-ahead
POLICIES = [("default: small first block, look-ahead on every block", None, None),
            ("previous default", (15, 25, 50), (12, 25, 50)),
            ("no look-ahead (before it was added)", (15, 25, 50), (0,))]


def _policies():
    from services.decoder.settings import DecoderSettings

    st = DecoderSettings().glmtts
    default = (st.chunk_schedule, st.lookahead)
    return [(name, b or default[0], a or default[1]) for name, b, a in POLICIES]


def block_end_distance(blocks, lookahead) -> tuple[float, float]:
    """Stream the pack's tokens one at a time through block mode with ``lookahead``: the max |mel - offline| within
    4 frames of every block end, and anywhere."""
    import itertools

    from safetensors.torch import load_file

    from services.decoder.engine.glmtts.flow import load_flow

    flow = load_flow(PACK_FLOW)
    x = load_file(str(PACK_FLOW / "flow_inputs.safetensors"))
    off = flow.inference(x["token"], x["prompt_token"], x["prompt_feat"], x["embedding"], n_timesteps=10,
                         noise=x["noise"])
    s = flow.stream(x["prompt_token"], x["prompt_feat"], x["embedding"], n_timesteps=10, block_pattern=blocks,
                    lookahead=list(lookahead), noise=x["noise"])
    pieces = [m for t in range(x["token"].shape[1]) if (m := s.push(x["token"][:, t:t + 1])).shape[-1]]
    pieces.append(s.finish())
    mel = torch.cat(pieces, dim=-1)
    ends = list(itertools.accumulate(p.shape[-1] for p in pieces))[:-1]
    d = (mel - off).abs()
    return max(float(d[:, :, max(0, e - 4): e + 4].max()) for e in ends), float(d.max())


async def first_chunk_by_policy(engine, text: str, runs: int) -> list[tuple]:
    """Per policy: (name, blocks, look-ahead, tokens before the first chunk, median first-chunk latency s, audio s
    in the first chunk, pack block-end distance, pack max distance)."""
    from services.decoder.engine.glmtts.acoustic import emit_schedule

    saved = engine.schedule, engine.lookahead, engine.acoustic.lookahead
    policies = _policies()

    async def first_chunk(blocks, la, seed):
        engine.schedule, engine.lookahead = list(blocks), list(la)
        engine.acoustic.lookahead = list(la)
        t0 = time.perf_counter()
        stream = engine.open_stream(Voice(), StreamOptions(seed=seed))
        stream.feed(SegmentInput(index=0, text=text, normalized=text))
        stream.end()
        try:
            async for c in stream.chunks():
                return time.perf_counter() - t0, len(c.audio) / engine.sample_rate
        finally:
            await stream.close()

    times: dict[str, list] = {name: [] for name, _, _ in policies}
    audio: dict[str, float] = {}
    try:
        for name, blocks, la in policies:         # one unmeasured run each (first use of its block shapes)
            await first_chunk(blocks, la, 199)
        for i in range(runs):                     # interleaved, so a change of machine load hits every policy
            for name, blocks, la in policies:
                t, audio[name] = await first_chunk(blocks, la, 200 + i)
                times[name].append(t)
    finally:
        engine.schedule, engine.lookahead, engine.acoustic.lookahead = saved
    out = []
    for name, blocks, la in policies:
        at_ends, overall = await asyncio.to_thread(block_end_distance, blocks, la)
        out.append((name, blocks, la, emit_schedule(blocks, la)[0], statistics.median(times[name]), audio[name],
                    at_ends, overall))
    return out


def print_policies(rows) -> None:
    print("| streaming policy | flow blocks | look-ahead | tokens before the first chunk | first chunk (median) "
          "| audio in it | pack: mel distance at block ends | pack: anywhere |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, blocks, la, first_tokens, first_s, audio_s, at_ends, overall in rows:
        print(f"| {name} | {','.join(map(str, blocks))} | {','.join(map(str, la))} | {first_tokens} "
              f"| {first_s * 1000:.0f} ms | {audio_s * 1000:.0f} ms | {at_ends:.3f} | {overall:.3f} |")
    rows = [(r[0], r[1], r[2], r[3], r[4], r[6], r[7]) for r in rows]
    d = rows[0]
    print(f"\ntargets (default policy): block ends within 0.1 of offline: {'PASS' if d[5] <= 0.1 else 'FAIL'} "
          f"({d[5]:.3f}); first chunk no later than with the previous default: "
          f"{'PASS' if d[4] <= rows[1][4] else 'FAIL'} ({d[4] * 1000:.0f} vs {rows[1][4] * 1000:.0f} ms)\n", flush=True)


async def streaming_only(path: Path, runs: int):
    engine = GLMTTSEngine(GLMTTSSettings(path=str(path), max_streams=4, max_tokens_per_stream=2048,
                                         device=str(DEVICE), dtype=str(DTYPE).removeprefix("torch.")))
    await engine.warmup()
    try:
        return await first_chunk_by_policy(engine, "您好，请问有什么可以帮您", runs)
    finally:
        await engine.close()


async def engine_runs(path: Path, tokens_per_stream: int, concurrency: list[int], first_chunk_runs: int):
    # exactly `ratio` speech tokens per text id, so every stream decodes the same number of tokens
    text = "您好，请问有什么可以帮您"
    engine = GLMTTSEngine(GLMTTSSettings(path=str(path), max_streams=max(concurrency) + 8, max_tokens_per_stream=2048,
                                         device=str(DEVICE), dtype=str(DTYPE).removeprefix("torch.")))
    await engine.warmup()
    ratio = tokens_per_stream / len(engine.lm.encode_text(text))
    engine.scheduler.layout.min_ratio = engine.scheduler.layout.max_ratio = ratio

    async def one(seed: int, t_start: float):
        stream = engine.open_stream(Voice(), StreamOptions(seed=seed))
        stream.feed(SegmentInput(index=0, text=text, normalized=text))
        stream.end()
        first = None
        tokens = 0
        try:
            async for c in stream.chunks():
                if first is None:
                    first = time.perf_counter() - t_start
                tokens += c.tokens
        finally:
            await stream.close()
        return first, tokens, time.perf_counter() - t_start

    firsts = []
    for i in range(first_chunk_runs):
        first, _, _ = await one(100 + i, time.perf_counter())
        firsts.append(first)
    rows = []
    for n in concurrency:
        _peak_reset()
        t0 = time.perf_counter()
        steps0 = engine.scheduler.steps
        results = await asyncio.gather(*(one(i, t0) for i in range(n)))
        wall = time.perf_counter() - t0
        per_stream = [tok / t for _, tok, t in results]
        batch = sum(tok for _, tok, _ in results) / max(1, engine.scheduler.steps - steps0)
        rows.append((n, min(per_stream), statistics.mean(per_stream), sum(tok for _, tok, _ in results) / wall,
                     statistics.median(f for f, _, _ in results), batch, _peak_mb()))
    builds = await prompt_build_rows(engine, text, n_streams=min(4, max(concurrency)))
    await engine.close()
    return firsts, rows, builds


def _reference_voice(i: int):
    """A new cloned voice each call (another reference id, other audio): its prompt must be built from scratch."""
    from services.decoder.engine.base import Voice

    rng = np.random.default_rng(1000 + i)
    t = np.arange(48000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * (120 + i) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    return Voice(reference_id=f"bench-voice-{i}-{os.getpid()}", embedding=rng.standard_normal(192).astype(np.float32),
                 prompt_pcm16k=pcm, prompt_text="参考音频")


async def prompt_build_rows(engine, text: str, n_streams: int):
    """Token rate of ``n_streams`` decoding streams alone, then while new voices' prompts are built one after another
    (3 s of reference audio each: speech tokenizer + prompt mel, on the engine's prompt thread). The voices' own
    streams get no text, so they never decode: only the prompt building competes with the decoding streams."""
    from services.decoder.engine.base import SegmentInput, StreamOptions, Voice

    async def decode(seed):
        stream = engine.open_stream(Voice(), StreamOptions(seed=seed))
        stream.feed(SegmentInput(index=0, text=text, normalized=text))
        stream.end()
        t0, tokens = time.perf_counter(), 0
        try:
            async for c in stream.chunks():
                tokens += c.tokens
        finally:
            await stream.close()
        return tokens / (time.perf_counter() - t0)

    built = [0]
    stop = asyncio.Event()

    async def build_voices():
        i = 0
        while not stop.is_set():
            i += 1
            s = engine.open_stream(_reference_voice(i), StreamOptions(seed=i))
            try:
                while s.state.prompt is None and not stop.is_set():   # built on the prompt thread
                    await asyncio.sleep(0.005)
                if s.state.prompt is not None:
                    built[0] += 1
            finally:
                await s.close()

    alone = statistics.mean(await asyncio.gather(*(decode(i) for i in range(n_streams))))
    builder = asyncio.ensure_future(build_voices())
    try:
        during = statistics.mean(await asyncio.gather(*(decode(100 + i) for i in range(n_streams))))
    finally:
        stop.set()
        await builder
    return n_streams, alone, during, built[0]


def print_scheduler_rows(lm_tokens: int, lm_rows) -> None:
    print(f"| concurrent streams, LM through the scheduler ({lm_tokens} tokens each) | step | tok/s per "
          f"stream (min) | total tok/s | LM pass | streams per pass | total vs per-stream step |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, paged, old in lm_rows:
        for name, (lo, total, step, batch) in (("paged, one call", paged), ("per-stream", old)):
            ratio = f"{paged[1] / old[1]:.2f}x" if name.startswith("paged") else ""
            print(f"| {n} | {name} | {lo:.1f} | {total:.1f} | {step * 1000:.1f} ms | {batch:.2f} | {ratio} |")
    verdicts = [f"{n} streams {paged[1] / old[1]:.2f}x: {'PASS' if paged[1] >= 1.5 * old[1] else 'FAIL'}"
                for n, paged, old in lm_rows if n in (8, 16)]
    four = [paged for n, paged, _ in lm_rows if n == 4]
    if four:
        verdicts.append(f"4 streams >= 25 tok/s each: {'PASS' if four[0][0] >= 25 else 'FAIL'} ({four[0][0]:.1f})")
    print(f"\ntargets: total tok/s >= 1.5x the per-stream step: {'; '.join(verdicts)}\n", flush=True)


def main() -> None:
    global DEVICE, DTYPE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="50m", help="10m, 50m (random tiny sizes) or full (the published sizes)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU, fp32 on CPU), bfloat16, float16, float32")
    ap.add_argument("--checkpoint", default="", help="default: models/glmtts-<size>")
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--stream-tokens", type=int, default=100)
    ap.add_argument("--lm-tokens", type=int, default=200, help="tokens per stream in the scheduler runs")
    ap.add_argument("--concurrency", default="", help="scheduler runs; default 1,2,4,8,16,32 (SIZE=full: 1,4,16,64)")
    ap.add_argument("--engine-concurrency", default="", help="whole-engine runs; default 1,2,4,8 (SIZE=full: "
                    "1,4,16,64)")
    ap.add_argument("--streaming-only", action="store_true",
                    help="only section 6 (streaming policy: pack mel distance and first-chunk latency)")
    ap.add_argument("--scheduler-only", action="store_true",
                    help="only section 2 (LM through the scheduler, paged vs per-stream step, --concurrency)")
    args = ap.parse_args()
    DEVICE, DTYPE = pick_device(args.device, args.dtype)
    path = Path(args.checkpoint or ROOT / "models" / f"glmtts-{args.size}")
    if not (path / "llm" / "config.json").exists():
        print(f"writing a random {args.size} checkpoint to {path} ...", flush=True)
        if args.size == "full":
            write_published_size_checkpoint(path, device=str(DEVICE))
        else:
            write_tiny_checkpoint(path, args.size)
    if DEVICE.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))     # same thread budget the engine uses
        where = f"CPU, {torch.get_num_threads()} torch thread(s) per worker, {os.cpu_count()} cores"
    else:
        where = torch.cuda.get_device_name(DEVICE)
    lm0 = SpeechLM.load(Layout.of(path).llm, Layout.of(path).tokenizer)
    params = sum(p.numel() for p in lm0.model.parameters())
    del lm0
    print(f"\nglmtts decoder benchmark — {path.name}: {params / 1e6:.1f}M-parameter LLM, {where}, "
          f"{str(DTYPE).removeprefix('torch.')}; load average {_load()}\n", flush=True)

    conc = [int(x) for x in (args.concurrency or ("1,4,16,64" if args.size == "full" else "1,2,4,8,16,32")).split(",")]
    if args.scheduler_only:
        print_scheduler_rows(args.lm_tokens, scheduler_runs(path, args.lm_tokens, conc))
        print(f"load average after section 2: {_load()}")
        return
    print_policies(asyncio.run(streaming_only(path, runs=5)))
    print(f"load average after section 6: {_load()}\n", flush=True)
    if args.streaming_only:
        return

    with_cache, without, per_stream = lm_speed(path, args.tokens)
    print(f"| LM decoding, {args.tokens} tokens, 1 stream | tok/s |")
    print("|---|---:|")
    print(f"| with the paged KV cache (one attention call per layer) | {with_cache:.1f} |")
    print(f"| with the per-stream step it replaced | {per_stream:.1f} |")
    print(f"| without KV cache (full recompute) | {without:.1f} |")
    print(f"| speed-up over no cache | {with_cache / without:.1f}x |")
    print(f"\ntargets: >= 45 tok/s with cache: {'PASS' if with_cache >= 45 else 'FAIL'}; "
          f">= 5x no-cache: {'PASS' if with_cache >= 5 * without else 'FAIL'}; "
          f"not slower than the per-stream step: {'PASS' if with_cache >= 0.97 * per_stream else 'FAIL'}\n",
          flush=True)

    print_scheduler_rows(args.lm_tokens, scheduler_runs(path, args.lm_tokens, conc))

    econc = [int(x) for x in (args.engine_concurrency or ("1,4,16,64" if args.size == "full" else "1,2,4,8")).split(",")]
    firsts, rows, builds = asyncio.run(engine_runs(path, args.stream_tokens, econc, first_chunk_runs=5))
    print(f"time to first audio chunk (1 stream, default policy): median {statistics.median(firsts) * 1000:.0f} ms, "
          f"min {min(firsts) * 1000:.0f} ms, max {max(firsts) * 1000:.0f} ms over {len(firsts)} runs\n")
    print(f"| concurrent streams, whole engine ({args.stream_tokens} tokens each, audio rendered at the same time) "
          f"| tok/s per stream (min) | tok/s per stream (mean) | total tok/s | first chunk (median) "
          f"| streams per LM pass | peak device memory |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, lo, mean, total, first, batch, peak in rows:
        mem = "n/a (CPU)" if peak != peak else f"{peak:.0f} MiB"
        print(f"| {n} | {lo:.1f} | {mean:.1f} | {total:.1f} | {first * 1000:.0f} ms | {batch:.2f} | {mem} |")
    n, alone, during, built = builds
    share = during / alone if alone else 0.0
    print(f"\n| {n} streams decoding (tok/s per stream, mean) | alone | while new voices' prompts are built | kept |")
    print("|---|---:|---:|---:|")
    print(f"| prompts built on the prompt thread ({built} new 3 s voices) | {alone:.1f} | {during:.1f} "
          f"| {share * 100:.0f} % |")
    print(f"\ntarget: >= 80 % of the token rate kept while prompts are built: {'PASS' if share >= 0.8 else 'FAIL'}")


if __name__ == "__main__":
    main()

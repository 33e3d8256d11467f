"""Conversation-grade streaming: N LLM-paced streams at once through the gateway of a private stack.

    make bench-stream                                   # the default engine (fastspeech2), N = 1, 4, 16, 32
    .venv/bin/python -m bench.bench_stream [--streams 1,4,16,32] [--pace-ms 50] [--chars 1-3] [--decoders 1]
        [--model glmtts --glmtts-path models/glmtts-50m [--glmtts-token-ratio 5-6]]
    make bench-bargein                                  # --barge-in: 4 streams, each cut and continued

Each stream sends one customer-service reply as a chat model emits it (1-3 characters every 50 ms by default) and
reads the audio. Client-side playback model: playback starts at the first chunk; a chunk that arrives after the
audio before it has finished playing is a stall of that length. Per N it prints first-audio p50/p95 (from the first
text piece sent), stalls, stall seconds / audio seconds, the share of streams with any stall > 50 ms, the server's
smallest playback margin, refused streams (RESOURCE_EXHAUSTED) with how fast they were refused, and the pod's
throughput: seconds of audio the served streams got per second of wall time of their rounds (below 1 x N: the pod
does not hold N real-time streams). ``--glmtts-token-ratio LO-HI`` bounds the glmtts LM's speech tokens per text
token (a random checkpoint never samples its end token, so without it every segment runs to the upper bound, 20x).
The stack (redis-server + the four services on free loopback ports) is started and stopped by this script.
Never part of `make test`.

``--barge-in`` (``make bench-bargein``): N (4) LLM-paced streams at once, each interrupted at a random point of its
first reply's playback (0.3–2.5 s after its first audio; played position from the same playback model) and
continued with a second reply on the same stream. Prints the time from sending the Cancel to receiving the
Interruption, the second reply's first audio (from its first text piece), and, in the same run, N fresh streams'
first audio with alignment off and on (rounds interleaved), p50/p95 each; also any audio of a cut reply that
arrived after its Interruption (must be 0).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

import shared  # noqa: F401  (generated stubs)
from shared.playback import PlaybackClock
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client.client import make_config

DEFAULT_STREAMS = "1,4,16,32"
LOCK = "/tmp/bench.lock"                # the README's benchmark lock: two benchmarks never share the cores

# ordinary replies of a customer-service bot (not the test texts)
REPLIES = [
    "您好，我是智能客服小安，很高兴为您服务。请问您是想查询订单，还是需要办理退换货呢？",
    "好的，已经帮您查到了。您在12月3日下的订单目前正在配送中，快递员预计今天下午5点前送达，请保持电话畅通。",
    "非常抱歉给您带来不便。您反馈的商品质量问题我已经记录下来了，售后专员会在24小时之内联系您，为您安排免费更换。",
    "您的信用卡本期账单金额是3,286.50元，最后还款日是下个月8号。如果需要分期，我可以为您介绍一下分期方案。",
    "请于14：30前到营业厅办理手续，记得携带身份证原件。如果时间不方便，也可以在手机App上预约其他时段。",
    "这款空调目前的活动价是2,999元，一级能效，支持WiFi远程控制。现在下单还送免费安装，并且可以享受三年质保。",
    "您的验证码是836215，五分钟内有效。为了您的账户安全，请不要把验证码告诉任何人，包括自称客服的工作人员。",
    "您预订的酒店是明天入住，房型为高级大床房，含双人早餐。酒店地址在人民路88号，距离地铁站步行大约五分钟。",
    "好的，您的会员积分还剩1,520分，可以兑换一张满200减30的优惠券，或者直接抵扣15元现金，您想选择哪一种呢？",
    "感谢您的耐心等待。您的退款申请已经审核通过，款项将在三到五个工作日内原路退回到您的支付账户，请注意查收。",
]


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def llm_pieces(text: str, rng: random.Random, lo: int, hi: int):
    i = 0
    while i < len(text):
        n = rng.randint(lo, hi)
        yield text[i:i + n]
        i += n


class Result:
    def __init__(self):
        self.first_audio_s = None
        self.refused_after_s = None
        self.refused_reason = ""
        self.error = None
        self.clock = PlaybackClock()
        self.long_stalls = 0
        self.summary = None


def one_stream(stub, text: str, seed: int, pace_s: float, lo: int, hi: int, model: str, start: threading.Event,
               timeout: float, metadata: tuple = (), alignment: bool = False) -> Result:
    res = Result()
    rng = random.Random(seed)
    sent_first: list[float] = []

    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(config=make_config(model=model, alignment=alignment))
        for piece in llm_pieces(text, rng, lo, hi):
            if not sent_first:
                sent_first.append(time.perf_counter())
            yield tts_pb2.StreamingSynthesizeRequest(text=piece)
            time.sleep(pace_s)            # the chat model's pace (pacing a load generator, not synchronisation)

    start.wait()
    t0 = time.perf_counter()
    try:
        for resp in stub.StreamingSynthesize(requests(), timeout=timeout, metadata=metadata or None):
            now = time.perf_counter()
            if resp.WhichOneof("response") == "audio":
                if res.first_audio_s is None:
                    res.first_audio_s = now - (sent_first[0] if sent_first else t0)
                stall = res.clock.deliver(now, resp.audio.duration_ms / 1000)
                if stall > 0.05:
                    res.long_stalls += 1
            else:
                res.summary = resp.summary
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and res.first_audio_s is None:
            res.refused_after_s = time.perf_counter() - t0
            res.refused_reason = err.details() or ""
        else:
            res.error = f"{err.code().name}: {(err.details() or '')[:120]}"
    return res


class BargeResult:
    def __init__(self):
        self.cancel_to_interruption_s = None
        self.second_first_audio_s = None
        self.late_chunks = 0                  # audio of the cut reply after its Interruption (must stay 0)
        self.heard = self.chars = 0
        self.error = None


def barge_stream(client, first: str, second: str, seed: int, pace_s: float, lo: int, hi: int, model: str,
                 start: threading.Event, timeout: float) -> BargeResult:
    """One conversation: reply 1 paced in, cut at a random playback point, reply 2 paced in, end."""
    from tts_client import Audio, Done, Interrupted

    res = BargeResult()
    rng = random.Random(seed)
    cut_after_s = rng.uniform(0.3, 2.5)             # of playback after the first audio
    stream = client.open_stream(make_config(model=model, alignment=True), timeout=timeout)
    cancelled = threading.Event()
    interrupted = threading.Event()
    t_second: list[float] = []

    def send():
        for piece in llm_pieces(first, rng, lo, hi):
            if cancelled.is_set():                  # the caller spoke: the LLM stops too
                break
            stream.send_text(piece)
            time.sleep(pace_s)                      # the chat model's pace (pacing a load generator)
        else:
            stream.flush()
        interrupted.wait(timeout)
        for piece in llm_pieces(second, rng, lo, hi):
            if not t_second:
                t_second.append(time.perf_counter())
            stream.send_text(piece)
            time.sleep(pace_s)
        stream.end()

    clock = PlaybackClock()
    start.wait()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    t_cancel = None
    try:
        timer = None
        for ev in stream:
            now = time.perf_counter()
            if isinstance(ev, Audio):
                if ev.reply == 0:
                    if t_cancel is not None and res.cancel_to_interruption_s is not None:
                        res.late_chunks += 1
                        continue
                    clock.deliver(now, ev.chunk.duration_ms / 1000)
                    if timer is None:
                        t_first = now

                        def cut():
                            nonlocal t_cancel
                            at = time.perf_counter()
                            played = (clock.audio_s - max(0.0, clock.play_end - at)) * 1000
                            cancelled.set()
                            t_cancel = time.perf_counter()
                            stream.cancel(max(0.0, played))
                        timer = threading.Timer(max(0.0, t_first + cut_after_s - time.perf_counter()), cut)
                        timer.start()
                elif ev.reply == 1 and res.second_first_audio_s is None and t_second:
                    res.second_first_audio_s = now - t_second[0]
            elif isinstance(ev, Interrupted):
                res.cancel_to_interruption_s = now - t_cancel
                res.heard, res.chars = len(ev.heard_text), len(ev.heard_text) + len(ev.interruption.unspoken_text)
                interrupted.set()
            elif isinstance(ev, Done):
                break
    except Exception as exc:  # noqa: BLE001 - reported in the table
        res.error = f"{type(exc).__name__}: {str(exc)[:120]}"
    finally:
        interrupted.set()
        if timer is not None:
            timer.cancel()
        stream.close()
    if res.cancel_to_interruption_s is None and res.error is None:
        res.error = "no Interruption (the reply ended before the cut point)"
    return res


def together(n: int, stream) -> list:
    """``stream(k, start)`` for k in 0..n-1, each in its own thread, all starting when ``start`` is set (after their
    channels had a moment to connect); their results in order."""
    start = threading.Event()
    results: list = [None] * n

    def worker(k):
        results[k] = stream(k, start)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.2)                        # let the channels connect before the common start
    start.set()
    for t in threads:
        t.join()
    return results


def run_barge_round(target: str, n: int, args, offset: int) -> list[BargeResult]:
    from tts_client import TTSClient

    def stream(k, start):
        with TTSClient(target) as client:
            return barge_stream(client, REPLIES[(offset + k) % len(REPLIES)], REPLIES[(offset + k + 5) % len(REPLIES)],
                                offset + k, args.pace_ms / 1000, args.lo, args.hi, args.model, start, args.timeout)

    return together(n, stream)


def barge_in(target: str, args) -> None:
    n = int(args.streams.split(",")[0]) if args.streams != DEFAULT_STREAMS else 4
    rounds = args.rounds or 3
    cut, fresh_off, fresh_on = [], [], []
    for r in range(rounds):
        cut += run_barge_round(target, n, args, offset=r * n)
        args.alignment = False
        fresh_off += run_round(target, n, args, offset=r * n + 1)
        args.alignment = True
        fresh_on += run_round(target, n, args, offset=r * n + 2)
    ok = [x for x in cut if x.error is None]
    to_int = [x.cancel_to_interruption_s * 1000 for x in ok]
    second = [x.second_first_audio_s * 1000 for x in ok if x.second_first_audio_s is not None]
    off = [x.first_audio_s * 1000 for x in fresh_off if x.first_audio_s is not None and x.error is None]
    on = [x.first_audio_s * 1000 for x in fresh_on if x.first_audio_s is not None and x.error is None]
    print(f"{'what (' + str(n) + ' streams at once, ' + str(rounds) + ' rounds)':<52} {'n':>4} {'p50 ms':>8} "
          f"{'p95 ms':>8}")
    for name, vals in (("cancel sent → Interruption received", to_int),
                       ("second reply, same stream: first audio", second),
                       ("fresh stream: first audio (alignment off)", off),
                       ("fresh stream: first audio (alignment on)", on)):
        print(f"{name:<52} {len(vals):>4} {pct(vals, 50):>8.0f} {pct(vals, 95):>8.0f}")
    heard = sum(x.heard for x in ok)
    print(f"cut replies: {len(ok)}; characters heard {heard} of {sum(x.chars for x in ok)} received; audio of a cut "
          f"reply after its Interruption: {sum(x.late_chunks for x in cut)} chunks; errors: "
          f"{len(cut) - len(ok) + sum(x.error is not None for x in fresh_off + fresh_on)}")
    for e in [x.error for x in cut + fresh_off + fresh_on if x.error][:3]:
        print(f"      error: {e}")


def run_round(target: str, n: int, args, offset: int) -> list[Result]:
    def stream(k, start):
        with grpc.insecure_channel(target) as ch:
            return one_stream(tts_pb2_grpc.TextToSpeechStub(ch), REPLIES[(offset + k) % len(REPLIES)], offset + k,
                              args.pace_ms / 1000, args.lo, args.hi, args.model, start, args.timeout,
                              alignment=args.alignment)

    return together(n, stream)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_seconds(port: int) -> dict[str, float]:
    """The decoder's model compute so far by stage (``tts_decoder_model_seconds``)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {s.labels["stage"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "tts_decoder_model_seconds"}


class Profile:
    """Where the wall time of a round goes: CPU seconds of each process of the stack (and of this client), and the
    decoder's model time by stage, between ``start()`` and ``stop()``."""

    def __init__(self, stack, metrics_port: int):
        self.procs = {"frontend": stack.frontend, "gateway": stack.gateway, "speaker": stack.speaker,
                      "redis": stack.redis, **{f"decoder{k or ''}": d for k, d in enumerate(stack.decoders)}}
        self.pids = {n: p.proc.pid for n, p in self.procs.items() if p is not None and p.proc is not None}
        self.pids["bench client"] = os.getpid()
        self.port = metrics_port

    def _snap(self):
        return {n: cpu_seconds(pid) for n, pid in self.pids.items()}, model_seconds(self.port), time.perf_counter()

    def start(self) -> None:
        self.t0 = self._snap()

    def report(self, audio_s: float) -> str:
        cpu1, model1, t1 = self._snap()
        cpu0, model0, t0 = self.t0
        wall = t1 - t0
        cpu = {n: cpu1[n] - cpu0[n] for n in cpu1}
        model = {k: model1.get(k, 0.0) - model0.get(k, 0.0) for k in model1}
        parts = [f"{n} {c:.2f}" for n, c in sorted(cpu.items(), key=lambda x: -x[1])]
        stages = ", ".join(f"{k} {v:.2f}" for k, v in model.items())
        return (f"      profile: {wall:.1f} s wall on {os.cpu_count()} cores ({2 * wall:.1f} core-s), {audio_s:.1f} s "
                f"of audio; CPU s by process: {', '.join(parts)} (total {sum(cpu.values()):.2f}); decoder model "
                f"s: {stages}")


def private_stack(args, engines: str = ""):
    """The whole system on free loopback ports (tests/procs.py ``make_stack``), logs in a temp folder; ``engines``:
    TTS_DECODER_ENGINES ("" = the default, or fastspeech2,kokoro,glmtts with ``--model glmtts``)."""
    from tests.procs import make_stack

    glmtts = {"TTS_DECODER_ENGINES": engines} if engines else {}
    if args.model == "glmtts":
        glmtts = {"TTS_DECODER_ENGINES": engines or "fastspeech2,kokoro,glmtts",
                  "TTS_DECODER_GLMTTS_PATH": args.glmtts_path}
        if args.glmtts_token_ratio:
            lo, hi = args.glmtts_token_ratio.split("-")
            glmtts.update({"TTS_DECODER_GLMTTS_MIN_TOKEN_RATIO": lo, "TTS_DECODER_GLMTTS_MAX_TOKEN_RATIO": hi})
    if getattr(args, "barge_in", False):
        # the cut/continue timings are the point: every stream is admitted (on this box Kokoro's real-time admission
        # takes one stream at a time; the refusals are bench-stream's subject)
        glmtts["TTS_DECODER_KOKORO_TARGET_UTILIZATION"] = "0"
    if getattr(args, "metrics_port", 0):
        glmtts["TTS_DECODER_METRICS_PORT"] = args.metrics_port
    return make_stack(Path(tempfile.mkdtemp(prefix="tts-bench-stream-")), decoders=args.decoders, timeout=300,
                      TTS_DECODER_KOKORO_MIN_STREAMS=1,          # admission by measured capacity, as deployed
                      TTS_DECODER_FASTSPEECH2_MIN_STREAMS=1,
                      TTS_GATEWAY_MAX_STREAMS_PER_TENANT=0, TTS_GATEWAY_RATE_PER_TENANT=0, **glmtts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default=os.environ.get("BENCH_STREAMS", DEFAULT_STREAMS))
    ap.add_argument("--pace-ms", type=float, default=float(os.environ.get("BENCH_PACE_MS", 50)),
                    help="pause between text pieces")
    ap.add_argument("--chars", default="1-3", help="characters per text piece, lo-hi")
    ap.add_argument("--decoders", type=int, default=1)
    ap.add_argument("--model", default="fastspeech2", choices=["fastspeech2", "kokoro", "glmtts"])
    ap.add_argument("--barge-in", action="store_true", help="cut each stream's first reply, go on with a second")
    ap.add_argument("--alignment", action="store_true", help="ask for alignment on the chunks")
    ap.add_argument("--glmtts-path", default="models/glmtts-50m")
    ap.add_argument("--glmtts-token-ratio", default="", help="glmtts speech tokens per text token, lo-hi")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per N (0: 3 for N=1, 2 for N=2, 1 above)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per stream")
    ap.add_argument("--target", default="", help="an existing gateway instead of a private stack")
    ap.add_argument("--profile", action="store_true",
                    help="per N: CPU seconds of each process of the private stack and the decoder's model time")
    args = ap.parse_args()
    args.lo, args.hi = (int(x) for x in args.chars.split("-"))
    ns = [int(x) for x in args.streams.split(",") if x.strip()]

    lock = open(LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)         # no other benchmark on the cores meanwhile
    t_start = time.perf_counter()
    if args.profile:
        from tests.procs import free_port

        args.metrics_port = free_port()
    stack = None if args.target else private_stack(args)
    profile = Profile(stack, args.metrics_port) if args.profile and stack else None
    target = args.target or stack.gateway.addr
    try:
        load = os.getloadavg()[0]
        print(f"bench-stream: model {args.model}, {args.decoders} decoder(s), pace {args.chars} chars / "
              f"{args.pace_ms:g} ms, {os.cpu_count()} CPUs, load average {load:.1f} at start", flush=True)
        run_round(target, 1, args, offset=len(REPLIES) - 1)          # warm-up (not counted)
        if args.barge_in:
            barge_in(target, args)
            print(f"({time.perf_counter() - t_start:.0f} s in all; load average {os.getloadavg()[0]:.1f} at the end)")
            return 0
        header = (f"{'N':>3} {'streams':>7} {'refused':>7} {'refused in ms p50/max':>22} {'first audio p50/p95 ms':>23} "
                  f"{'synth first p50/p95':>20} {'stalls':>6} {'stall s/audio s':>15} {'>50ms stall':>11} {'min margin ms':>13} {'errors':>6} "
                  f"{'audio s/wall s':>14}")
        print(header)
        rows = []
        for n in ns:
            rounds = args.rounds or (3 if n == 1 else 2 if n == 2 else 1)
            results = []
            wall = 0.0
            if profile:
                profile.start()
            for r in range(rounds):
                t_round = time.perf_counter()
                results += run_round(target, n, args, offset=r * n)
                wall += time.perf_counter() - t_round
            served = [x for x in results if x.first_audio_s is not None and x.error is None]
            refused = [x.refused_after_s for x in results if x.refused_after_s is not None]
            errors = [x.error for x in results if x.error]
            first = [x.first_audio_s * 1000 for x in served]
            stalls = sum(x.clock.stalls for x in served)
            stall_s = sum(x.clock.stall_s for x in served)
            audio_s = sum(x.clock.audio_s for x in served)
            long_share = sum(x.long_stalls > 0 for x in served) / max(len(served), 1)
            margins = [x.summary.min_playback_margin_ms for x in served if x.summary is not None]
            synth = [x.summary.synthesis_first_chunk_ms for x in served if x.summary is not None]
            ref = (f"{pct([r * 1000 for r in refused], 50):.0f} / {max(refused) * 1000:.0f}" if refused else "-")
            row = (f"{n:>3} {len(results):>7} {len(refused):>7} {ref:>22} "
                   f"{pct(first, 50):>11.0f} / {pct(first, 95):<9.0f} {pct(synth, 50):>9.0f} / {pct(synth, 95):<8.0f} "
                   f"{stalls:>6} "
                   f"{(stall_s / audio_s if audio_s else 0):>15.2%} {long_share:>11.0%} "
                   f"{(min(margins) if margins else float('nan')):>13.0f} {len(errors):>6} "
                   f"{(audio_s / wall if wall else 0):>14.2f}")
            print(row, flush=True)
            rows.append(row)
            if profile:
                print(profile.report(audio_s), flush=True)
            for e in errors[:3]:
                print(f"      error: {e}")
        print(f"({time.perf_counter() - t_start:.0f} s in all; load average {os.getloadavg()[0]:.1f} at the end)")
        return 0
    finally:
        if stack:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())

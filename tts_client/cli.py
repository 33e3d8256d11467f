"""ttsctl: command-line client for the gateway (TTS_GATEWAY=host:port, TTS_TOKEN=... for auth)."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import wave

import grpc
from google.protobuf.json_format import MessageToDict

from .client import ENCODINGS, TTSClient, make_config


def _pieces(text: str, stream: bool):
    """With --stream, send the text the way an LLM would: a few characters at a time."""
    if not stream:
        yield text
        return
    for piece in re.findall(r"[A-Za-z0-9.]+\s*|.{1,3}", text, flags=re.S):
        yield piece


def _write(path: str, pcm: bytes, rate: int, encoding: str) -> None:
    """linear16/wav: a WAV file with the real length (a streamed WAV header says "unknown"); the rest as received
    (mulaw raw; ogg_opus, mp3, flac, aac: the streamed chunks are a complete file)."""
    if encoding not in ("wav", "linear16") or path == "-":
        (sys.stdout.buffer.write(pcm) if path == "-" else open(path, "wb").write(pcm))
        return
    if pcm.startswith(b"RIFF"):
        pcm = pcm[44:]
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def cmd_synth(client: TTSClient, a) -> int:
    ref = open(a.ref, "rb").read() if a.ref else b""
    cfg = make_config(voice=a.voice or "", reference_audio=ref, prompt_text=a.prompt_text or "",
                      language=a.language, sample_rate=a.sample_rate, encoding=a.encoding,
                      chunk_size=a.chunk_size, seed=a.seed, speed=a.speed, phoneme_mode=a.phoneme,
                      model=a.model, use_cache=None if a.use_cache is None else a.use_cache == "on",
                      alignment=a.timestamps)
    if a.stream:        # pieces as an LLM sends them, on StreamingSynthesize (its cuts follow the decoder's load)
        res = client.stream(_pieces(a.text, True), cfg)
        if a.timestamps:
            print_timestamps(a.text, res.chunks)
        _write(a.out, res.audio, res.sample_rate or a.sample_rate or 24000, a.encoding)
        s = res.summary
        client_figures = {"chunks": len(res.chunks), "client_first_chunk_ms": round((res.first_chunk_s or 0) * 1000, 1)}
    else:               # the whole text: unary Synthesize (the same text, voice and seed give the same audio)
        t0 = time.perf_counter()
        resp = client.synthesize(a.text, cfg)
        client_figures = {"client_total_ms": round((time.perf_counter() - t0) * 1000, 1)}
        if a.timestamps:
            print_timestamps(a.text, [resp])
        _write(a.out, resp.audio, resp.sample_rate or a.sample_rate or 24000, a.encoding)
        s = resp.summary
    print(json.dumps({
        "out": a.out, "audio_s": round(s.audio_ms / 1000, 3), "segments": s.segments,
        "first_chunk_ms": round(s.first_chunk_latency_ms, 1), **client_figures,
        "rtf": round(s.real_time_factor, 3), "tokens": s.tokens, "engine": s.engine,
        "request_id": s.request_id}, ensure_ascii=False), file=sys.stderr)
    return 0


def print_timestamps(text: str, chunks) -> None:
    """One line per alignment entry: the characters as sent, start–end ms in the stream's audio ("silent" for a
    mark or space with no voice of its own; "estimated" when the engine only estimates). ``chunks``: the stream's
    AudioChunks, or a unary SynthesizeResponse in a list (the same alignment fields)."""
    for c in chunks:
        for e in c.alignment:
            flags = " ".join(f for f, on in (("silent", e.silent), ("estimated", c.alignment_estimated)) if on)
            print(f"{text[e.span.start:e.span.end]!s}\t{e.start_ms:.1f}–{e.end_ms:.1f} ms" + (f"\t{flags}" if flags
                                                                                            else ""))


def cmd_voices(client: TTSClient, a) -> int:
    resp = client.list_voices()
    for v in resp.voices:
        kind = "builtin" if v.builtin else f"registered {v.reference_seconds:.1f}s {v.created_at}"
        print(f"{v.id}\t{v.name}\t{v.engine}\t{kind}\t{v.language or '-'}\t{v.license or '-'}")
    if resp.registered_voices_error:
        print(f"warning: {resp.registered_voices_error}", file=sys.stderr)
    return 0


def cmd_models(client: TTSClient, a) -> int:
    models, default = client.models()
    for name in sorted(models, key=lambda m: m != default):
        print(f"{name}\tdefault" if name == default else name)
    return 0


def cmd_register(client: TTSClient, a) -> int:
    resp = client.register_voice(a.name, open(a.audio, "rb").read(), a.prompt_text or "")
    print(json.dumps(MessageToDict(resp), ensure_ascii=False, indent=2))
    return 0


def cmd_frontend(client: TTSClient, a) -> int:
    segs = client.analyze(a.text, language=a.language, phoneme_mode=a.phoneme)
    print(json.dumps([MessageToDict(s, always_print_fields_with_no_presence=True) for s in segs],
                     ensure_ascii=False, indent=2))
    return 0


def cmd_health(client: TTSClient, a) -> int:
    status = client.health()
    print(f"{client.target}: {status}")
    return 0 if status == "SERVING" else 1


def _follow_batch(client: TTSClient, job) -> object:
    """Live progress (tqdm: lines, rate, ETA, failures) from WatchBatch until the job ends; returns the last job."""
    from tqdm import tqdm

    from tts.v1 import tts_pb2

    bar = tqdm(total=job.total, initial=job.done + job.failed, unit="line", desc=job.id[:12], dynamic_ncols=True,
               file=sys.stderr)
    last = job
    lost = 0
    try:
        while last.state not in (tts_pb2.BATCH_DONE, tts_pb2.BATCH_CANCELLED, tts_pb2.BATCH_FAILED):
            try:
                for event in client.watch_batch(job.id):
                    lost = 0
                    last = event.job
                    bar.update(last.done + last.failed - bar.n)
                    bar.set_postfix(failed=last.failed,
                                    state=tts_pb2.BatchState.Name(last.state).removeprefix("BATCH_"))
                    for line in event.finished:
                        if line.state == tts_pb2.BATCH_LINE_FAILED:
                            bar.write(f"line {line.line} {line.uttid or '?'}: {line.error}", file=sys.stderr)
                break                   # the stream ended: the job has finished
            except grpc.RpcError as err:
                # the gateway restarting: the job goes on (another gateway resumes it); watch again
                if err.code() != grpc.StatusCode.UNAVAILABLE or lost >= 60:
                    raise
                lost += 1
                time.sleep(1.0)
    finally:
        bar.close()
    return last


def cmd_batch(client: TTSClient, a) -> int:
    from tts.v1 import tts_pb2

    if a.cancel:
        job = client.cancel_batch(a.cancel)
        print(f"{job.id}: {tts_pb2.BatchState.Name(job.state)} ({job.done} done, {job.failed} failed of {job.total})")
        return 0
    if a.resume:
        job = client.get_batch(a.resume)
    elif a.jsonl:
        cfg = make_config(voice=a.voice or "", language=a.language, sample_rate=a.sample_rate, seed=a.seed,
                          speed=a.speed, model=a.model)
        if a.server_path:
            job = client.submit_batch(server_path=a.jsonl, config=cfg, name=a.name or a.jsonl)
        else:
            with open(a.jsonl, "rb") as f:
                job = client.submit_batch(jsonl=f.read(), config=cfg, name=a.name or a.jsonl)
        print(f"job {job.id}: {job.total} lines (resume with: ttsctl batch --resume {job.id} --out {a.out})",
              file=sys.stderr)
    else:
        print("error: give a JSONL file, --resume JOB or --cancel JOB", file=sys.stderr)
        return 2
    try:
        job = _follow_batch(client, job)
    except KeyboardInterrupt:
        print(f"\nthe job goes on on the server; resume with: ttsctl batch --resume {job.id} --out {a.out}",
              file=sys.stderr)
        return 130
    got = client.download_batch(job.id, a.out)
    print(json.dumps({"job": job.id, "state": tts_pb2.BatchState.Name(job.state).removeprefix("BATCH_").lower(),
                      "total": job.total, "done": job.done, "failed": job.failed,
                      "audio_s": round(job.audio_seconds, 3), "out": a.out, "wavs": got["wavs"],
                      "results": got["results"]}, ensure_ascii=False), file=sys.stderr)
    return 0 if job.state == tts_pb2.BATCH_DONE and job.failed == 0 else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ttsctl", description=__doc__)
    p.add_argument("--target", default=None, help="gateway host:port (default $TTS_GATEWAY or localhost:50051)")
    p.add_argument("--token", default=None, help="bearer token (default $TTS_TOKEN)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("synth", help="synthesize text to a file")
    s.add_argument("text")
    s.add_argument("--out", default="out.wav")
    s.add_argument("--ref", help="reference audio for voice cloning")
    s.add_argument("--prompt-text", help="transcript of the reference audio")
    s.add_argument("--voice", help="built-in voice or registered voice id")
    s.add_argument("--language", default="")
    s.add_argument("--sample-rate", type=int, default=0)
    s.add_argument("--encoding", default="wav", choices=list(ENCODINGS))
    s.add_argument("--chunk-size", type=int, default=0)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--speed", type=float, default=0.0)
    s.add_argument("--model", default="", help="an engine the server serves (ttsctl models); default: the server's")
    s.add_argument("--use-cache", choices=["on", "off"], default=None)
    s.add_argument("--phoneme", action="store_true", help="phoneme mode: 我要[xie3]个字, {血|xie3}")
    s.add_argument("--stream", action="store_true", help="send the text in small pieces on StreamingSynthesize, as an "
                   "LLM would (default: the whole text in one unary Synthesize call)")
    s.add_argument("--timestamps", action="store_true",
                   help="print when each character sounds (char, start–end ms), from the chunks' alignment")
    s.set_defaults(fn=cmd_synth)

    v = sub.add_parser("voices", help="list voices")
    v.set_defaults(fn=cmd_voices)

    m = sub.add_parser("models", help="list the models (decoder engines) the server serves, the default first")
    m.set_defaults(fn=cmd_models)

    r = sub.add_parser("register", help="register a reference voice")
    r.add_argument("name")
    r.add_argument("audio")
    r.add_argument("--prompt-text")
    r.set_defaults(fn=cmd_register)

    f = sub.add_parser("frontend", help="show the frontend's segments as JSON")
    f.add_argument("text")
    f.add_argument("--language", default="")
    f.add_argument("--phoneme", action="store_true")
    f.set_defaults(fn=cmd_frontend)

    b = sub.add_parser("batch", help="a JSONL batch job: submit, follow with a progress bar, download into --out")
    b.add_argument("jsonl", nargs="?", help="JSONL file: uttid, syn_text, prompt_speech, prompt_text, ...")
    b.add_argument("--out", default="batch_out", help="folder for <uttid>.wav and results.jsonl")
    b.add_argument("--resume", metavar="JOB", help="follow and download an existing job")
    b.add_argument("--cancel", metavar="JOB", help="cancel a job")
    b.add_argument("--server-path", action="store_true", help="the JSONL path is on the gateway (allowed folder)")
    b.add_argument("--name", default="")
    b.add_argument("--voice", help="voice for lines without prompt_speech")
    b.add_argument("--language", default="")
    b.add_argument("--sample-rate", type=int, default=0)
    b.add_argument("--seed", type=int, default=None)
    b.add_argument("--speed", type=float, default=0.0)
    b.add_argument("--model", default="", help="an engine the server serves (ttsctl models); default: the server's")
    b.set_defaults(fn=cmd_batch)

    h = sub.add_parser("health", help="gateway health")
    h.set_defaults(fn=cmd_health)

    a = p.parse_args(argv)
    try:
        with TTSClient(a.target, a.token) as client:
            return a.fn(client, a)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

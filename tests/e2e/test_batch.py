"""Batch JSONL jobs end to end: real redis-server, frontend, speaker, decoder and gateway on loopback.

The stack is this module's own (auth on with tenants a and b, an allowed input folder, a small lease so a killed
gateway's jobs are taken over quickly). Texts are 2-4 characters so 200 lines take seconds with the kokoro engine.
"""
from __future__ import annotations

import json
import random
import secrets
import signal
import subprocess
import sys
import wave
from pathlib import Path

import grpc
import pytest
import redis

from services.gateway.auth import hash_token
from tests.procs import ROOT, Service, make_stack, rpc_error, wait_until
from tts.v1 import tts_pb2
from tts_client import TTSClient
from tts_client import cli
from tts_client.client import make_config

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("a", "b")}
CHARS = "你好谢谢早安晚上我们今天天气很好再见明白可以的"
CONCURRENCY = 2


class BatchStack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.inputs = tmp / "inputs"
        self.outputs = tmp / "outputs"
        (self.inputs / "a").mkdir(parents=True)                 # each tenant has its own input folder
        (self.inputs / "a" / "broken.wav").write_bytes(b"RIFF not really a wav file" * 50)
        self.own = make_stack(
            tmp, TTS_GATEWAY_TOKENS=",".join(f"{t}:{hash_token(tok)}" for t, tok in TOKENS.items()),
            TTS_GATEWAY_RATE_PER_TENANT=0, TTS_GATEWAY_BATCH_INPUT_DIR=self.inputs,
            TTS_GATEWAY_BATCH_OUTPUT_DIR=self.outputs, TTS_GATEWAY_BATCH_CONCURRENCY=CONCURRENCY,
            TTS_GATEWAY_BATCH_MAX_LINES=300, TTS_GATEWAY_BATCH_MAX_BYTES=64 * 1024,
            TTS_GATEWAY_BATCH_MAX_JOBS_PER_TENANT=3, TTS_GATEWAY_BATCH_LEASE_S=1.5, TTS_GATEWAY_BATCH_WATCH_POLL_S=0.2)
        self.redis, self.frontend, self.speaker, self.decoder = (
            self.own.redis, self.own.frontend, self.own.speaker, self.own.decoder)

    @property
    def gateway(self) -> Service:
        return self.own.gateway

    def start_gateway(self) -> None:
        """A new gateway process on the same port (after the old one was stopped or killed)."""
        self.own.start_gateway()

    def client(self, tenant: str) -> TTSClient:
        return TTSClient(self.gateway.addr, token=TOKENS[tenant], timeout=60)

    def stop(self):
        self.own.stop()


@pytest.fixture(scope="module")
def bs(tmp_path_factory):
    s = BatchStack(tmp_path_factory.mktemp("batch"))
    yield s
    s.stop()


@pytest.fixture
def ca(bs):
    with bs.client("a") as c:
        yield c


@pytest.fixture
def cb(bs):
    with bs.client("b") as c:
        yield c


def good_lines(n: int, prefix: str, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    return [json.dumps({"uttid": f"{prefix}{i:04d}", "syn_text": "".join(rnd.sample(CHARS, rnd.randint(2, 3))),
                        "prompt_speech": "jm_kumo" if i % 2 else "", "prompt_text": ""}, ensure_ascii=False)
            for i in range(n)]


def jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


FAST = make_config(speed=2.0)       # half the audio to compute: keeps the 200-line job short on a busy 2-core box


def follow(client: TTSClient, job_id: str) -> tuple[tts_pb2.BatchJob, list, tts_pb2.BatchJob]:
    """WatchBatch until the job ends: the last job snapshot, every finished line seen, the first snapshot."""
    first, job, finished = None, None, []
    for event in client.watch_batch(job_id, timeout=600):
        first = first or event.job
        job = event.job
        finished += list(event.finished)
    return job, finished, first



@pytest.mark.slow
@pytest.mark.timeout(900)           # ~40 s on an idle 2-core box; minutes when other suites share the cores
def test_200_lines_with_5_bad_ones(bs, ca, tmp_path):
    lines = good_lines(195, "u")
    bad = {
        17: '{"uttid": "bad-json", "syn_text": ',
        50: json.dumps({"uttid": "no-text", "prompt_speech": "jm_kumo"}),
        90: json.dumps({"uttid": "no-voice", "syn_text": "你好", "prompt_speech": "v_" + "0" * 32}),
        130: json.dumps({"uttid": "bad-audio", "syn_text": "你好", "prompt_speech": "broken.wav"}),
        170: json.dumps({"uttid": "traversal", "syn_text": "你好", "prompt_speech": "../../etc/passwd"}),
    }
    for pos in sorted(bad):
        lines.insert(pos, bad[pos])
    assert len(lines) == 200
    job = ca.submit_batch(jsonl=jsonl(lines), config=FAST, name="two hundred")
    assert job.id.startswith("b_") and len(job.id) == 34 and job.total == 200
    assert job.state in (tts_pb2.BATCH_QUEUED, tts_pb2.BATCH_RUNNING)

    final, finished, first = follow(ca, job.id)
    assert final.state == tts_pb2.BATCH_DONE, final
    assert (final.done, final.failed, final.total) == (195, 5, 200)
    # every line finished after the first event is reported once by WatchBatch
    assert len({f.line for f in finished}) == len(finished) == 200 - first.done - first.failed

    got = ca.get_batch(job.id)
    errors = {e.uttid or "?": (e.line, e.error) for e in got.errors}
    assert errors["?"][0] == 18 and errors["?"][1].startswith("line: not valid JSON")
    assert errors["no-text"] == (51, "syn_text: missing (a non-empty string is required)")
    assert errors["no-voice"][0] == 91 and "prompt_speech: unknown voice 'v_000" in errors["no-voice"][1]
    assert "built-in voices: " in errors["no-voice"][1] and "jm_kumo" in errors["no-voice"][1]
    assert errors["bad-audio"][0] == 131 and errors["bad-audio"][1].startswith(
        "prompt_speech: 'broken.wav': cannot decode audio"), errors
    assert errors["traversal"] == (171, "prompt_speech: no readable file '../../etc/passwd' in this tenant's "
                                        "input folder")

    out = bs.outputs / got.output_dir
    assert out == bs.outputs / "a" / job.id
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 195
    with wave.open(str(wavs[0])) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (24000, 2, 1) and w.getnframes() > 2400
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in results] == list(range(1, 201))
    ok = [r for r in results if r["status"] == "done"]
    assert len(ok) == 195 and all(r["normalized_text"] and r["phonemes"] and r["duration_s"] > 0.1
                                  and r["rtf"] > 0 and not r["error"] for r in ok)
    assert sum(r["status"] == "failed" and r["error"] != "" for r in results) == 5

    # one line through GetBatchResult, then the CLI's resume path downloads everything into a folder
    one = ca.get_batch_result(job.id, "u0003")
    assert one.result.state == tts_pb2.BATCH_LINE_DONE and one.wav == (out / "u0003.wav").read_bytes()
    dest = tmp_path / "dl"
    code = cli.main(["--target", bs.gateway.addr, "--token", TOKENS["a"], "batch", "--resume", job.id,
                     "--out", str(dest)])
    assert code == 1                                       # finished, with failed lines
    assert len(list(dest.glob("*.wav"))) == 195
    downloaded = [json.loads(x) for x in (dest / "results.jsonl").read_text().splitlines()]
    assert [(r["uttid"], r["status"]) for r in downloaded] == [(r["uttid"], r["status"]) for r in results]
    assert any(j.id == job.id and j.done == 195 for j in ca.list_batches())


def test_ttsctl_batch_submits_follows_and_downloads(bs, tmp_path):
    src = tmp_path / "jobs.jsonl"
    src.write_bytes(jsonl(good_lines(4, "cli")))
    dest = tmp_path / "out"
    code = cli.main(["--target", bs.gateway.addr, "--token", TOKENS["a"], "batch", str(src), "--out", str(dest),
                     "--seed", "7", "--speed", "2"])
    assert code == 0
    assert sorted(p.name for p in dest.iterdir()) == ["cli0000.wav", "cli0001.wav", "cli0002.wav", "cli0003.wav",
                                                      "results.jsonl"]


def test_killed_gateway_resumes_without_redoing_finished_lines(bs, tmp_path):
    total = 40
    with bs.client("a") as c:
        job = c.submit_batch(jsonl=jsonl(good_lines(total, "r", seed=1)), config=FAST)
        # ttsctl follows the job through the crash (it watches again while the gateway is UNAVAILABLE)
        dest = tmp_path / "cli"
        follower = subprocess.Popen([sys.executable, "-m", "tts_client.cli", "--target", bs.gateway.addr, "--token",
                                     TOKENS["a"], "batch", "--resume", job.id, "--out", str(dest)],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # wait (bounded polling) until a part of the job is done, then note what is finished and its files
        wait_until(lambda: c.get_batch(job.id).done >= 8, 120, "8 lines done", interval=0.05)
        before = c.get_batch(job.id, include_lines=True)
    finished = {ln.uttid for ln in before.lines if ln.state == tts_pb2.BATCH_LINE_DONE}
    out = bs.outputs / before.output_dir
    stats = {u: (out / f"{u}.wav").stat() for u in finished}
    bs.gateway.stop(signal.SIGKILL)
    r = redis.Redis.from_url(bs.redis.url)
    at_kill = int(r.hget(f"tts:job:v1:a:{job.id}", "done")) + int(r.hget(f"tts:job:v1:a:{job.id}", "failed"))
    assert at_kill < total, "the job ended before the gateway was killed; nothing was resumed"
    bs.start_gateway()

    with bs.client("a") as c:
        final, _, _ = follow(c, job.id)
        assert final.state == tts_pb2.BATCH_DONE and (final.done, final.failed) == (total, 0)
        after = c.get_batch(job.id, include_lines=True)
    attempts = {int(k): int(v) for k, v in r.hgetall(f"tts:job:v1:a:{job.id}:attempts").items()}
    by_uttid = {ln.uttid: ln for ln in after.lines}
    for uttid in finished:                                  # finished before the kill: not synthesized again
        assert by_uttid[uttid].attempts == 1
        st = (out / f"{uttid}.wav").stat()
        assert (st.st_ino, st.st_mtime_ns) == (stats[uttid].st_ino, stats[uttid].st_mtime_ns)
    assert len(attempts) == total
    # only lines unfinished at the kill were started more than once (in flight then, or retried after UNAVAILABLE
    # while the new gateway connected to the stages)
    unfinished = {ln.line - 1 for ln in before.lines if ln.state == tts_pb2.BATCH_LINE_PENDING}
    assert {i for i, n in attempts.items() if n > 1} <= unfinished, attempts
    assert len(list(out.glob("*.wav"))) == total
    output = follower.communicate(timeout=120)[0].decode(errors="replace")
    assert follower.returncode == 0, output
    assert len(list(dest.glob("*.wav"))) == total and (dest / "results.jsonl").exists()


def test_tenants_cannot_see_each_others_jobs(bs, ca, cb):
    job = ca.submit_batch(jsonl=jsonl(good_lines(3, "t")), config=FAST)
    final, _, _ = follow(ca, job.id)
    assert final.state == tts_pb2.BATCH_DONE
    for call in (lambda: cb.get_batch(job.id), lambda: cb.watch_batch(job.id, timeout=10),
                 lambda: cb.cancel_batch(job.id), lambda: cb.get_batch_result(job.id, "t0000"),
                 lambda: cb.stub.DownloadBatch(tts_pb2.DownloadBatchRequest(id=job.id), metadata=cb.metadata,
                                               timeout=10)):
        err = rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND and "not found" in err.details()
    assert job.id not in {j.id for j in cb.list_batches()}
    job_b = cb.submit_batch(jsonl=jsonl(good_lines(2, "t")), config=FAST)
    assert follow(cb, job_b.id)[0].state == tts_pb2.BATCH_DONE
    assert cb.get_batch(job_b.id).output_dir == f"b/{job_b.id}"          # relative: no server path
    assert sorted(p.name for p in (bs.outputs / "b" / job_b.id).glob("*.wav")) == ["t0000.wav", "t0001.wav"]
    # unknown and malformed ids are NOT_FOUND too
    assert rpc_error(ca.get_batch, "b_" + "f" * 32).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(ca.get_batch, "../../x").code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("kwargs, needle", [
    ({"server_path": "../../etc/passwd"}, "server_path: no readable file '../../etc/passwd' in this tenant's"),
    ({"server_path": "/etc/passwd"}, "server_path: no readable file '/etc/passwd' in this tenant's"),
    ({"server_path": "missing.jsonl"}, "server_path: no readable file 'missing.jsonl' in this tenant's"),
    ({"jsonl": b""}, "the job is empty"),
    ({"jsonl": b"\n  \n\n"}, "jsonl: the job is empty"),
    ({"jsonl": jsonl(good_lines(3, "d") + [json.dumps({"uttid": "d0001", "syn_text": "好"})])},
     "jsonl: line 4: duplicate uttid 'd0001' (first on line 2)"),
    ({"jsonl": jsonl(good_lines(301, "m"))}, "jsonl: more than 300 lines (line 301)"),
    ({"jsonl": b"x" * (64 * 1024 + 1)}, "jsonl: 65537 bytes is over the 65536 byte limit"),
])
def test_bad_jobs_are_rejected_up_front(ca, kwargs, needle):
    err = rpc_error(ca.submit_batch, **kwargs)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.details(), err.details()


def test_a_job_from_a_server_path(bs, ca):
    (bs.inputs / "a" / "jobs").mkdir(exist_ok=True)
    (bs.inputs / "a" / "jobs" / "small.jsonl").write_bytes(jsonl(good_lines(2, "s")))
    job = ca.submit_batch(server_path="jobs/small.jsonl", config=FAST)
    assert follow(ca, job.id)[0].done == 2


def test_cancel(bs, ca):
    job = ca.submit_batch(jsonl=jsonl(good_lines(150, "c", seed=2)), config=FAST)
    wait_until(lambda: ca.get_batch(job.id).done >= 2, 120, "2 lines done", interval=0.05)
    cancelled = ca.cancel_batch(job.id)
    assert cancelled.state == tts_pb2.BATCH_CANCELLED
    final, _, _ = follow(ca, job.id)                       # ends at once: the job is finished
    assert final.state == tts_pb2.BATCH_CANCELLED and final.done + final.failed < 150
    assert ca.cancel_batch(job.id).state == tts_pb2.BATCH_CANCELLED      # again: a no-op
    results = [json.loads(x) for x in (bs.outputs / final.output_dir / "results.jsonl").read_text().splitlines()]
    assert len(results) == 150 and results[-1]["status"] == "cancelled"
    done_job = ca.submit_batch(jsonl=jsonl(good_lines(1, "c1")), config=FAST)
    follow(ca, done_job.id)
    err = rpc_error(ca.cancel_batch, done_job.id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "already finished" in err.details()


def test_unfinished_jobs_per_tenant_are_limited(ca, cb):
    jobs = [ca.submit_batch(jsonl=jsonl(good_lines(150, f"l{i}-")), config=FAST) for i in range(3)]
    err = rpc_error(ca.submit_batch, jsonl=jsonl(good_lines(1, "l")))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "the limit is 3 per tenant" in err.details()
    other = cb.submit_batch(jsonl=jsonl(good_lines(1, "l")), config=FAST)        # another tenant is not affected
    for job in jobs:
        assert ca.cancel_batch(job.id).state == tts_pb2.BATCH_CANCELLED
    assert follow(ca, ca.submit_batch(jsonl=jsonl(good_lines(1, "l")), config=FAST).id)[0].done == 1
    assert follow(cb, other.id)[0].done == 1

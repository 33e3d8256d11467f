"""Hostile batch input and a store that goes away (issue 23, findings 5, 6, 9, 10 and 12), tried on real processes:
a persisted noeviction redis-server as the durable store, the frontend, speaker and decoder, and two gateway replicas
on that store with auth on (tenants alice and bob). Every test also checks that the other tenant is still served.

The gateways run with a ``sitecustomize`` on their path that makes one line (uttid ``inject-fault``) raise an
unexpected exception where the runner reads it: a fault injected into a real process, not a mock.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import grpc
import pytest
import redis

from services.gateway.auth import hash_token
from tests.procs import ROOT, RedisServer, make_stack, rpc_error, wait_until
from tts.v1 import tts_pb2
from tts_client import TTSClient
from tts_client.client import make_config

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("alice", "bob")}
JOB_BYTES = 1_500_000           # TTS_GATEWAY_MAX_JOB_BYTES_PER_TENANT of this stack
FAST = make_config(sample_rate=16000, speed=2.0)
WAV = (ROOT / "tests" / "data" / "BAC009S0764W0121.wav").read_bytes()
FAULT_UTTID = "inject-fault"
TERMINAL = (tts_pb2.BATCH_DONE, tts_pb2.BATCH_CANCELLED, tts_pb2.BATCH_FAILED)

SITECUSTOMIZE = '''
import os, sys
marker = os.environ.get("TTS_TEST_FAULT_UTTID")
if marker:
    sys.path.insert(0, os.getcwd())
    import services.gateway.batch.runner as runner

    real = runner.parse_line

    def parse_line(raw, *args, **kw):
        if ('"uttid": "%s"' % marker).encode() in raw:
            raise RuntimeError("injected fault while reading this line")
        return real(raw, *args, **kw)

    runner.parse_line = parse_line
'''


class HostileStack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        (tmp / "store").mkdir()
        self.store = RedisServer(log_dir=tmp, policy="noeviction", data_dir=tmp / "store").start()
        self.stages = make_stack(tmp, start=("redis", "frontend", "speaker", "decoder"))
        fault = tmp / "fault"
        fault.mkdir()
        (fault / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.outputs = tmp / "outputs"
        self.replicas = [make_stack(
            tmp, base=self.stages, start=("gateway",), TTS_GATEWAY_REDIS_URL=self.store.url,
            TTS_GATEWAY_TOKENS=",".join(f"{t}:{hash_token(tok)}" for t, tok in TOKENS.items()),
            TTS_GATEWAY_RATE_PER_TENANT=0, TTS_GATEWAY_BATCH_OUTPUT_DIR=self.outputs,
            TTS_GATEWAY_BATCH_LEASE_S=2, TTS_GATEWAY_BATCH_WATCH_POLL_S=0.2,
            TTS_GATEWAY_MAX_JOB_BYTES_PER_TENANT=JOB_BYTES, TTS_GATEWAY_MAX_JOBS_PER_TENANT=50,
            TTS_GATEWAY_BATCH_MAX_JOBS_PER_TENANT=4,
            PYTHONPATH=os.pathsep.join(p for p in (str(fault), os.environ.get("PYTHONPATH", "")) if p),
            TTS_TEST_FAULT_UTTID=FAULT_UTTID) for _ in range(2)]
        self.gateways = [r.gateway for r in self.replicas]

    def client(self, tenant: str, gateway: int = 0) -> TTSClient:
        return TTSClient(self.gateways[gateway].addr, token=TOKENS[tenant], timeout=60)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.store.url)

    def stop(self):
        for replica in reversed(self.replicas):
            replica.stop()
        self.stages.stop()
        self.store.stop()


@pytest.fixture(scope="module")
def hs(tmp_path_factory):
    s = HostileStack(tmp_path_factory.mktemp("hostile"))
    yield s
    s.stop()


# ---- helpers --------------------------------------------------------------------------------------------------------
def line(uttid: str, text: str = "你好", **fields) -> str:
    return json.dumps({"uttid": uttid, "syn_text": text, **fields}, ensure_ascii=False)


def raw_line(uttid: str, field: str, value: str) -> str:
    """A line whose ``field`` is ``value`` as written (a number Python itself would refuse to parse)."""
    return f'{{"uttid": "{uttid}", "syn_text": "你好", "{field}": {value}}}'


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def finished(client: TTSClient, job_id: str, timeout: float = 300) -> tts_pb2.BatchJob:
    """The job once it is DONE, CANCELLED or FAILED (polled with a deadline)."""
    def ended():
        job = client.get_batch(job_id)
        return job if job.state in TERMINAL else None
    return wait_until(ended, timeout, f"batch job {job_id} to end", interval=0.2)


def errors_by_uttid(client: TTSClient, job_id: str) -> dict[str, str]:
    return {e.uttid: e.error for e in client.get_batch(job_id).errors}


def served(client: TTSClient) -> bool:
    resp = client.synthesize("你好。", FAST)
    return len(resp.audio) > 1000


def log_mark(svc) -> int:
    return svc.log_path.stat().st_size


def log_records(svc, since: int) -> list[dict]:
    """The gateway's JSON log records written after ``since`` (bytes)."""
    with open(svc.log_path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    out = []
    for raw in text.splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append({"msg": raw, "exc": raw} if "Traceback" in raw else {"msg": raw})
    return out


def tracebacks(hs, marks: list[int]) -> list[dict]:
    return [r for g, m in zip(hs.gateways, marks) for r in log_records(g, m) if "exc" in r]



def delete_all(client: TTSClient) -> None:
    for job in client.list_batches():
        client.delete_batch(job.id)


# ---- finding 6: a poison line, and an unexpected error in a line, fail only that line -----------------------------
def test_a_poison_line_fails_by_name_and_the_job_finishes(hs):
    marks = [log_mark(g) for g in hs.gateways]
    with hs.client("alice") as a, hs.client("bob", 1) as b:
        job = a.submit_batch(jsonl=jsonl(
            line("ok-1"),
            raw_line("poison-seed", "seed", "9" * 5000),                # past Python's int-from-string limit
            raw_line("poison-rate", "sample_rate", "1" * 4400),
            raw_line("big-seed", "seed", "7" * 4000),                   # parses, but is no 63-bit seed
            line("inf-seed", seed=1e400),
            '{"uttid": "nan-rate", "syn_text": "你好", "sample_rate": NaN}',
            line("ssml", "<speak>你好</speak>"),
            line("ok-2")), config=FAST)
        final = finished(a, job.id)
        assert final.state == tts_pb2.BATCH_DONE, final
        assert (final.done, final.failed) == (2, 6), final
        errors = errors_by_uttid(a, job.id)
        assert errors["poison-seed"].startswith("seed: a 5000-digit number"), errors
        assert errors["poison-rate"].startswith("sample_rate: a 4400-digit number is not supported"), errors
        assert errors["big-seed"].startswith("seed: a 4000-digit number"), errors
        assert errors["inf-seed"].startswith("seed: inf must be an integer"), errors
        assert errors["nan-rate"].startswith("sample_rate: nan is not supported"), errors
        assert errors["ssml"].startswith("syn_text: SSML is not supported"), errors
        assert all(len(e) < 400 for e in errors.values()), errors
        assert a.stub.GetBatch(tts_pb2.GetBatchRequest(id=job.id), metadata=a.metadata).state == tts_pb2.BATCH_DONE
        assert served(b)
        # the unfinished-jobs quota is given back: more jobs than it allows run one after another
        for n in range(5):
            assert finished(a, a.submit_batch(jsonl=jsonl(raw_line(f"p{n}", "seed", "9" * 5000)),
                                              config=FAST).id).failed == 1
        delete_all(a)
    assert tracebacks(hs, marks) == []


def test_an_unexpected_error_in_a_line_fails_only_that_line(hs):
    marks = [log_mark(g) for g in hs.gateways]
    with hs.client("alice") as a, hs.client("bob", 1) as b:
        job = a.submit_batch(jsonl=jsonl(line("ok-1"), line(FAULT_UTTID), line("ok-2")), config=FAST)
        final = finished(a, job.id)
        assert final.state == tts_pb2.BATCH_DONE and (final.done, final.failed) == (2, 1), final
        error = errors_by_uttid(a, job.id)[FAULT_UTTID]
        assert error.startswith("line: internal error") and "injected fault while reading this line" in error
        assert served(b)
        delete_all(a)
    crashes = tracebacks(hs, marks)
    assert len(crashes) == 1 and "injected fault" in crashes[0]["exc"], crashes     # logged once, for that line


# ---- finding 10: JSON nested 100,000 deep fails its line, not the submit --------------------------------------------
def test_a_line_nested_100000_deep_fails_alone(hs):
    with hs.client("alice", 1) as a, hs.client("bob") as b:
        job = a.submit_batch(jsonl=jsonl(
            line("ok-1"), "[" * 100_000,
            '{"uttid": "deep-field", "syn_text": "你好", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
            '{"uttid": "deep-uttid", "syn_text": "你好", "uttid": ' + "{" * 50_000 + "}",
            line("ok-2")), config=FAST)
        final = finished(a, job.id)
        assert final.state == tts_pb2.BATCH_DONE and (final.done, final.failed) == (2, 3), final
        lines = {r.line: r for r in a.get_batch(job.id, include_lines=True).lines}
        for n in (2, 3, 4):
            assert lines[n].error.startswith("line: JSON nested deeper than"), lines[n]
        assert lines[3].uttid == "" and lines[1].uttid == "ok-1"
        # the same line is refused up front where a whole job is read: duplicates are still found around it
        err = rpc_error(a.submit_batch, jsonl=jsonl(line("d"), "[" * 100_000, line("d")), config=FAST)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "line 3: duplicate uttid 'd'" in err.details()
        assert served(b)
        delete_all(a)


# ---- finding 9: a mistyped voice names the known ones ---------------------------------------------------------------
def test_an_unknown_voice_names_the_builtin_and_the_tenants_voices(hs):
    with hs.client("alice") as a, hs.client("bob", 1) as b:
        mine = a.register_voice("alices-voice", WAV).voice
        bobs = b.register_voice("bobs-secret-voice", WAV).voice
        builtin = [v.id for v in a.voices() if v.builtin]
        try:
            job = a.submit_batch(jsonl=jsonl(
                line("typo", prompt_speech="no_such_voice"),
                line("gone", prompt_speech="v_" + "0" * 32),
                line("path", prompt_speech="refs/speaker.wav"),
                line("ok", prompt_speech=builtin[0])), config=FAST)
            final = finished(a, job.id)
            assert final.state == tts_pb2.BATCH_DONE and (final.done, final.failed) == (1, 3), final
            errors = errors_by_uttid(a, job.id)
            for uttid, voice in (("typo", "no_such_voice"), ("gone", "v_" + "0" * 32)):
                msg = errors[uttid]
                assert msg.startswith(f"prompt_speech: unknown voice {voice!r}"), msg
                assert builtin[0] in msg and f"{mine.id} (alices-voice)" in msg, msg
                assert bobs.id not in msg and "bobs-secret-voice" not in msg, msg     # only the tenant's own
                assert "TTS_GATEWAY_BATCH_INPUT_DIR" not in msg, msg
            # a path keeps the path rules: this gateway has no input folder
            assert errors["path"].startswith("prompt_speech: server paths are disabled"), errors
            # the job's own voice is checked up front, with the same answer
            err = rpc_error(a.submit_batch, jsonl=jsonl(line("x")), config=make_config(voice="no_such_voice"))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.details().startswith("config.voice: unknown voice 'no_such_voice'"), err.details()
            assert builtin[0] in err.details() and mine.id in err.details() and bobs.id not in err.details()
            assert served(b)
        finally:
            a.delete_voice(mine.id)
            b.delete_voice(bobs.id)
            delete_all(a)


# ---- finding 5: the stored-data quota counts what a job keeps in the store -----------------------------------------
def store_bytes(r: redis.Redis, tenant: str) -> int:
    """What the store holds for the tenant's batch jobs: MEMORY USAGE (every element counted) of each of its keys."""
    keys = [*r.scan_iter(match=f"tts:job:v1:{tenant}:*", count=1000), f"tts:jobs:v1:{tenant}"]
    return sum(r.memory_usage(k, samples=0) or 0 for k in keys)


def counted(r: redis.Redis, tenant: str) -> int:
    return int(r.hget(f"tts:quota:v1:{tenant}", "job_bytes") or 0)


def failing_lines(n: int, prefix: str) -> bytes:
    """Lines that fail at once ("。" has nothing to speak), each leaving its result record in the store."""
    return jsonl(*(line(f"{prefix}{i:05d}", "。") for i in range(n)))


def test_the_job_bytes_quota_counts_what_the_store_keeps(hs):
    r = hs.redis()
    with hs.client("bob") as b, hs.client("alice", 1) as a:
        delete_all(b)
        base = r.info("memory")["used_memory"]
        refused = None
        for n in range(10):
            try:
                job = b.submit_batch(jsonl=failing_lines(1000, f"f{n}-"), config=FAST)
            except grpc.RpcError as e:
                refused = e
                break
            final = finished(b, job.id)
            assert final.state == tts_pb2.BATCH_DONE and final.failed == 1000, final
            held, count = store_bytes(r, "bob"), counted(r, "bob")
            print(f"job {n + 1}: bob's keys hold {held} bytes (MEMORY USAGE); the quota counted {count}; "
                  f"used_memory grew {r.info('memory')['used_memory'] - base} (limit {JOB_BYTES})")
            assert held <= count <= JOB_BYTES
        assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "job_bytes" in refused.details() and "TTS_GATEWAY_MAX_JOB_BYTES_PER_TENANT" in refused.details()
        assert r.info("memory")["used_memory"] - base <= JOB_BYTES
        # alice has her own quota
        assert finished(a, a.submit_batch(jsonl=failing_lines(10, "a"), config=FAST).id).failed == 10
        assert served(a)
        delete_all(a)
        delete_all(b)                           # everything is given back, and nothing is left behind
        assert counted(r, "bob") == 0 and not list(r.scan_iter(match="tts:job:v1:bob:*"))


# ---- finding 12: the durable store killed and started again (last: it restarts the store) --------------------------
STORE_DOWN = "batch store unreachable"


def test_the_store_killed_and_restarted_under_a_running_job(hs):
    with hs.client("alice") as a, hs.client("bob", 1) as b:
        mine = a.register_voice("kept", WAV).voice
        builtin = {v.id for v in a.voices() if v.builtin}
        job = a.submit_batch(jsonl=jsonl(*(line(f"r{i:02d}", "你好谢谢") for i in range(40))), config=FAST)
        wait_until(lambda: a.get_batch(job.id).done >= 2, 300, "two lines done before the store goes down")
        marks = [log_mark(g) for g in hs.gateways]
        at_kill = a.get_batch(job.id)
        hs.store.kill()
        assert at_kill.state == tts_pb2.BATCH_RUNNING and at_kill.done < 40
        # ListVoices: the built-in voices, and a word that the registered ones are missing
        for client in (a, b):
            resp = client.list_voices()
            assert {v.id for v in resp.voices} == builtin and all(v.builtin for v in resp.voices)
            assert resp.registered_voices_error.startswith("registered voices are not listed: redis unavailable")
        assert served(b)                        # built-in voices are still spoken
        # every replica's runner noticed (its log says so), then the store comes back with its data
        wait_until(lambda: all(any(r.get("msg", "").startswith(STORE_DOWN) for r in log_records(g, m))
                               for g, m in zip(hs.gateways, marks)), 60, "both runners to notice the store is gone")
        hs.store = hs.store.again()
        final = finished(a, job.id)
        assert final.state == tts_pb2.BATCH_DONE and (final.done, final.failed) == (40, 0), final
        # everything works again on both replicas, no gateway restarted
        for client in (a, b):
            assert client.list_voices().registered_voices_error == ""
        assert mine.id in {v.id for v in a.voices()}
        b.delete_voice(b.register_voice("after", WAV).voice.id)
        assert finished(b, b.submit_batch(jsonl=jsonl(line("after")), config=FAST).id).done == 1
        a.delete_voice(mine.id)
        delete_all(a)
        delete_all(b)
    # nothing crashed, and each replica's runner logged the outage once
    assert tracebacks(hs, marks) == []
    for g, m in zip(hs.gateways, marks):
        assert sum(r.get("msg", "").startswith(STORE_DOWN) for r in log_records(g, m)) == 1

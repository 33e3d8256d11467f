"""The batch job store's accounting against a real redis-server (noeviction, as the durable store): what a job keeps
in Redis is what its tenant's ``job_bytes`` quota counts (issue 23, finding 5), measured with MEMORY USAGE."""
from __future__ import annotations

import json

import pytest
import redis

from services.gateway.batch.store import RECORD_ALLOWANCE, JobStore
from services.gateway.quotas import JOBS, UNFINISHED_JOBS
from services.gateway.settings import BatchSettings, GatewaySettings, QuotaSettings
from tests.procs import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    r = RedisServer(log_dir=tmp_path_factory.mktemp("store"), policy="noeviction").start()
    yield r
    r.stop()


@pytest.fixture
def sync(server):
    r = redis.Redis.from_url(server.url)
    r.flushall()
    yield r
    r.close()


def job_store(server, job_bytes: int) -> JobStore:
    return JobStore(GatewaySettings(redis_url=server.url, quotas=QuotaSettings(max_job_bytes_per_tenant=job_bytes),
                                    batch=BatchSettings(max_jobs_per_tenant=8)))


def lines(n: int, prefix: str = "u") -> list[tuple[int, bytes]]:
    return [(i + 1, json.dumps({"uttid": f"{prefix}{i:05d}", "syn_text": "你好"}).encode()) for i in range(n)]


async def create(store: JobStore, tenant: str, job_id: str, items: list[tuple[int, bytes]]):
    record = {"id": job_id, "tenant": tenant, "state": "queued", "total": len(items), "done": 0, "failed": 0,
              "config": b"\x08\x01" * 20, "output_dir": f"/out/{tenant}/{job_id}", "created_at": "now"}
    uttids = {json.loads(raw)["uttid"]: i for i, (_, raw) in enumerate(items)}
    return await store.create(tenant, job_id, record, items, uttids,
                              store.quotas.args(**{JOBS.field: 1, UNFINISHED_JOBS.field: 1}))


def kept(sync: redis.Redis, tenant: str) -> int:
    """MEMORY USAGE (every element) of the tenant's job keys and index."""
    keys = [*sync.scan_iter(match=f"tts:job:v1:{tenant}:*", count=1000), f"tts:jobs:v1:{tenant}"]
    return sum(sync.memory_usage(k, samples=0) or 0 for k in keys)


def counted(sync: redis.Redis, tenant: str) -> int:
    return int(sync.hget(f"tts:quota:v1:{tenant}", "job_bytes") or 0)


def done_record(line: int, uttid: str, chars: int) -> dict:
    """A finished line as the runner records it, its text ``chars`` characters long."""
    return {"line": line, "uttid": uttid, "status": "done", "normalized_text": "你好" * (chars // 2),
            "phonemes": " ".join(["n i3 h ao3"] * (chars // 2)), "duration_s": 1.25, "rtf": 0.5,
            "sample_rate": 24000}


def fallback(line: int, uttid: str) -> dict:
    return {"line": line, "uttid": uttid, "status": "failed", "error": "job_bytes: over the quota"}


@pytest.mark.parametrize("n, chars", [(50, 4), (2000, 4), (2000, 60), (300, 400)])
async def test_a_job_counts_what_it_keeps_and_gives_it_all_back(server, sync, n, chars):
    store = job_store(server, 64 * 1024 * 1024)
    try:
        items = lines(n)
        assert await create(store, "bob", "b_" + "1" * 32, items) is None
        at_submit = counted(sync, "bob")
        assert kept(sync, "bob") <= at_submit
        for i, (lineno, raw) in enumerate(items):
            uttid = json.loads(raw)["uttid"]
            await store.attempt("bob", "b_" + "1" * 32, i)
            rec = done_record(lineno, uttid, chars) if i % 3 else {
                "line": lineno, "uttid": uttid, "status": "failed", "error": "syn_text: has nothing to speak"}
            assert await store.finish_line("bob", "b_" + "1" * 32, i, rec, fallback(lineno, uttid)) == 1
        held, count = kept(sync, "bob"), counted(sync, "bob")
        print(f"{n} lines of {chars} characters: MEMORY USAGE {held} bytes, counted {count} "
              f"({count / held:.2f}x; {count - at_submit} paid when results over {RECORD_ALLOWANCE} bytes came)")
        assert held <= count
        assert int(sync.hget("tts:job:v1:bob:b_" + "1" * 32, "bytes")) == count
        assert (count > at_submit) == (len(json.dumps(done_record(1, "u00000", chars), ensure_ascii=False)
                                           .encode()) > RECORD_ALLOWANCE)
        existed, _ = await store.delete("bob", "b_" + "1" * 32)
        assert existed and counted(sync, "bob") == 0 and kept(sync, "bob") == 0
    finally:
        await store.close()


async def test_a_result_the_quota_cannot_take_is_recorded_as_a_failure_that_fits(server, sync):
    probe = job_store(server, 0)
    try:                                        # what a 3-line job pays at submit
        await create(probe, "bob", "b_" + "2" * 32, lines(3))
        cost = counted(sync, "bob")
        await probe.delete("bob", "b_" + "2" * 32)
    finally:
        await probe.close()
    store = job_store(server, cost + 500)       # room for the job and 500 bytes more
    try:
        job = "b_" + "3" * 32
        assert await create(store, "bob", job, lines(3)) is None
        small, big = done_record(1, "u00000", 2), done_record(2, "u00001", 400)
        assert await store.finish_line("bob", job, 0, small, fallback(1, "u00000")) == 1
        assert await store.finish_line("bob", job, 1, big, fallback(2, "u00001")) == 2
        assert await store.finish_line("bob", job, 1, small, fallback(2, "u00001")) == 0    # recorded once
        results = await store.results("bob", job)
        assert results[0] == small and results[1] == fallback(2, "u00001")
        meta = await store.meta("bob", job)
        assert (int(meta["done"]), int(meta["failed"])) == (1, 1)
        assert kept(sync, "bob") <= counted(sync, "bob") <= cost + 500
    finally:
        await store.close()


async def test_a_job_over_the_quota_writes_nothing(server, sync):
    store = job_store(server, 100_000)
    try:
        assert await create(store, "bob", "b_" + "4" * 32, lines(50)) is None
        before = sync.hgetall("tts:quota:v1:bob")
        refused = await create(store, "bob", "b_" + "5" * 32, lines(200))
        field, used, asked = refused.decode().split(" ")
        assert field == "job_bytes" and int(used) == counted(sync, "bob") and int(used) + int(asked) > 100_000
        assert sync.hgetall("tts:quota:v1:bob") == before
        assert not list(sync.scan_iter(match="tts:job:v1:bob:b_5*"))
        assert sync.zrange("tts:jobs:v1:bob", 0, -1) == [b"b_" + b"4" * 32]
        assert sync.hkeys("tts:jobs:v1:active") == [b"b_" + b"4" * 32]
    finally:
        await store.close()


async def test_a_store_client_survives_a_restart_of_the_store(tmp_path):
    """Connections pooled before the store restarted are stale: each fails its next command once unless the client
    retries it on a new connection (the runner's first call after the reviewer's restart failed this way)."""
    import asyncio

    from services.gateway.quotas import store_client

    server = RedisServer(log_dir=tmp_path, policy="noeviction").start()
    client = store_client(server.url, 1.0, 1.0, 16)
    try:
        await asyncio.gather(*(client.blpop([f"nothing{i}"], timeout=0.2) for i in range(8)))   # 8 in the pool
        server.kill()
        server = server.again()
        results = await asyncio.gather(*(client.set(f"k{i}", i) for i in range(8)), return_exceptions=True)
        assert results == [True] * 8
    finally:
        await client.aclose()
        server.stop()

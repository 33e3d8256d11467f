"""The speaker cache over a pluggable shared store (store.py): any object with get/set/close serves as the store."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.speaker.engine.cache import EmbeddingCache, Entry
from services.speaker.engine.store import RedisStore, open_store


class MemoryStore:
    """A store two caches (two pods) can share, recording the TTLs asked for."""

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.ttls: list[tuple[str, str, int]] = []
        self.fail = False

    async def get(self, key, ttl_s):
        if self.fail:
            raise ConnectionError("store down")
        self.ttls.append(("get", key, ttl_s))
        return self.data.get(key)

    async def set(self, key, value, ttl_s):
        if self.fail:
            raise ConnectionError("store down")
        self.ttls.append(("set", key, ttl_s))
        self.data[key] = value

    async def close(self):
        pass


def entry() -> Entry:
    return Entry(np.arange(4, dtype=np.float32), 3.0, np.arange(48, dtype=np.int16), np.arange(72, dtype=np.int16))


def test_an_entry_put_by_one_pod_is_read_by_another_through_the_store():
    store = MemoryStore()
    a, b = EmbeddingCache(store, ttl_s=60), EmbeddingCache(store, ttl_s=60)

    async def go():
        await a.put("k", entry())
        return await b.get("k")

    got = asyncio.run(go())
    assert got is not None and np.array_equal(got.embedding, entry().embedding)
    assert np.array_equal(got.pcm24k, entry().pcm24k)
    assert ("set", "k", 60) in store.ttls and ("get", "k", 60) in store.ttls    # a read renews the TTL


def test_a_store_that_fails_is_a_miss_and_recovers():
    store, results = MemoryStore(), []
    cache = EmbeddingCache(store, on_result=results.append)
    store.fail = True

    async def go():
        await cache.put("k", entry())               # served from the local LRU meanwhile
        miss = await cache.get("other")
        up_while_down = cache.store_up
        store.fail = False
        await cache.get("other")
        return miss, up_while_down

    miss, up_while_down = asyncio.run(go())
    assert miss is None and not up_while_down and cache.store_up
    assert "error" in results and "k" in cache.local


def test_garbage_in_the_store_is_a_miss():
    store = MemoryStore()
    store.data["k"] = b"not an entry"
    assert asyncio.run(EmbeddingCache(store).get("k")) is None


def test_the_url_scheme_picks_the_store():
    assert open_store("", 50) is None
    assert isinstance(open_store("redis://127.0.0.1:1/0", 50), RedisStore)
    with pytest.raises(ValueError, match="memcached"):
        open_store("memcached://127.0.0.1:11211", 50)

"""Where the speaker cache shares its entries across pods: a byte store with a TTL, chosen by the URL's scheme.

A store only moves bytes (``EmbeddingCache`` owns the value format, the local LRU and fail-open). To put the cache
somewhere else, write a class with the three methods of ``SharedStore`` and add its URL scheme to ``STORES``; the
setting ``TTS_SPEAKER_REDIS_URL`` then takes that URL.
"""
from __future__ import annotations

from typing import Callable, Protocol
from urllib.parse import urlsplit


class SharedStore(Protocol):
    async def get(self, key: str, ttl_s: int) -> bytes | None:
        """The value under ``key`` (None when absent), its TTL renewed to ``ttl_s``."""

    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def close(self) -> None: ...


class RedisStore:
    """Redis (or anything speaking its protocol): GETEX renews the TTL of an entry that is read."""

    def __init__(self, url: str, timeout_ms: int):
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url, socket_timeout=timeout_ms / 1000,
                                       socket_connect_timeout=timeout_ms / 1000)

    async def get(self, key: str, ttl_s: int) -> bytes | None:
        return await self.redis.getex(key, ex=ttl_s)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.redis.set(key, value, ex=ttl_s)

    async def close(self) -> None:
        await self.redis.aclose()


STORES: dict[str, Callable[[str, int], SharedStore]] = {
    "redis": RedisStore, "rediss": RedisStore, "unix": RedisStore,
}


def open_store(url: str, timeout_ms: int) -> SharedStore | None:
    """The store a URL names; None for "" (each pod keeps only its local cache)."""
    if not url:
        return None
    scheme = urlsplit(url).scheme
    if scheme not in STORES:
        raise ValueError(f"speaker cache URL {url!r}: unknown scheme {scheme!r} (known: {', '.join(STORES)})")
    return STORES[scheme](url, timeout_ms)

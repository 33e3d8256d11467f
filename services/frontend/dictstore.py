"""The replace dictionary shared by every frontend replica, in the durable Redis store.

``tts:dict:v1:content`` holds the JSONL text, ``tts:dict:v1:version`` a counter bumped on every write, and each
write is announced on the channel ``tts:dict:v1:changed``. A replica loads the stored copy at start (seeding it from
its file when the store has none: the file is the seed, never read again while the store answers), applies every
announced change at once, and also compares the version every ``dict_check_interval_s`` (a message missed while
its connection was down is caught up within that interval). An edit (``ReloadDictionary`` with content) is checked,
stored, announced, and applied by every replica within about a second.

Redis down: the replica keeps serving the readings it has; writes are UNAVAILABLE naming redis.
"""
from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.errors import Unavailable

log = logging.getLogger("frontend.dictstore")

CONTENT, VERSION, CHANNEL = "tts:dict:v1:content", "tts:dict:v1:version", "tts:dict:v1:changed"


class SharedDictionary:
    def __init__(self, engine, url: str, check_interval_s: float = 1.0, timeout_s: float = 2.0):
        self.engine = engine
        self.redis = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.check_interval_s = max(check_interval_s, 0.05)
        self.version: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self._seed()
            await self.refresh()
        except (RedisError, OSError) as exc:
            log.warning("shared replace dictionary unreachable; serving the file until it answers",
                        extra={"error": type(exc).__name__})
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._poll())]

    async def _seed(self) -> None:
        seed = await asyncio.to_thread(self.engine.file_dictionary_text)
        if seed is None:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(CONTENT, seed.encode("utf-8"), nx=True)
        results = await pipe.execute()
        if results[0]:
            await self.redis.incr(VERSION)
            log.info("shared replace dictionary seeded from the file", extra={"bytes": len(seed)})

    async def refresh(self, force: bool = False):
        """Load the stored copy if its version changed; returns (entries, errors) of what is served."""
        async with self._lock:
            pipe = self.redis.pipeline(transaction=True)
            pipe.get(VERSION)
            pipe.get(CONTENT)
            version, content = await pipe.execute()
            version = int(version or 0)
            if content is not None and (force or version != self.version):
                text = content.decode("utf-8", errors="replace")
                result = await asyncio.to_thread(self.engine.use_dictionary_text, text)
                self.version = version
                return result
            d = self.engine.dictionary
            return d.entries, list(d.errors)

    async def write(self, content: str):
        await asyncio.to_thread(self.engine.check_dictionary_text, content)      # InvalidArgument: nothing stored
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(CONTENT, content.encode("utf-8"))
            pipe.incr(VERSION)
            pipe.publish(CHANNEL, b"1")
            await pipe.execute()
            return await self.refresh()
        except (RedisError, OSError) as exc:
            raise Unavailable("redis", f"the shared replace dictionary store is unreachable "
                                       f"({type(exc).__name__}); nothing was changed") from None

    async def reload(self):
        try:
            return await self.refresh(force=True)
        except (RedisError, OSError) as exc:
            raise Unavailable("redis", f"the shared replace dictionary store is unreachable "
                                       f"({type(exc).__name__})") from None

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001  (Redis gone: the poll keeps the version in check; resubscribe)
                await asyncio.sleep(self.check_interval_s)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001
                    pass

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            try:
                if self.version is None:
                    await self._seed()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001  (Redis down: keep the readings we have)
                pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

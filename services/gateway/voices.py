"""Registered voices, per tenant, in Redis.

``tts:voice:v1:{tenant}:{id}`` → hash {name, reference_id, encoder, prompt_text, seconds, created_at, audio}
``tts:voices:v1:{tenant}`` → set of ids. Ids are random (``v_`` + 128 bits), so they cannot be guessed; a tenant
never sees another tenant's ids (lookups are scoped by tenant, so a foreign id is simply NOT_FOUND).
The canonical prompt audio is kept with the record so an evicted embedding can be recomputed.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.errors import NotFound, Unavailable


@dataclass
class VoiceRecord:
    id: str
    name: str
    reference_id: str
    encoder: str
    prompt_text: str
    seconds: float
    created_at: str
    audio: bytes = b""


class VoiceRegistry:
    def __init__(self, url: str, timeout_ms: int = 200):
        self.redis = aioredis.from_url(url, socket_timeout=timeout_ms / 1000, socket_connect_timeout=timeout_ms / 1000)
        self.timeout = timeout_ms / 1000

    @staticmethod
    def _key(tenant: str, voice_id: str) -> str:
        return f"tts:voice:v1:{tenant}:{voice_id}"

    @staticmethod
    def _index(tenant: str) -> str:
        return f"tts:voices:v1:{tenant}"

    async def _call(self, coro):
        try:
            return await asyncio.wait_for(coro, self.timeout * 5)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise Unavailable("redis", f"voice registry unreachable ({type(exc).__name__})") from None

    async def add(self, tenant: str, name: str, reference_id: str, encoder: str, prompt_text: str,
                  seconds: float, audio: bytes) -> VoiceRecord:
        rec = VoiceRecord(id="v_" + secrets.token_hex(16), name=name, reference_id=reference_id, encoder=encoder,
                          prompt_text=prompt_text, seconds=seconds,
                          created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), audio=audio)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._key(tenant, rec.id), mapping={
            "name": name, "reference_id": reference_id, "encoder": encoder, "prompt_text": prompt_text,
            "seconds": str(seconds), "created_at": rec.created_at, "audio": audio})
        pipe.sadd(self._index(tenant), rec.id)
        await self._call(pipe.execute())
        return rec

    async def get(self, tenant: str, voice_id: str, with_audio: bool = True) -> VoiceRecord:
        raw = await self._call(self.redis.hgetall(self._key(tenant, voice_id)))
        if not raw:
            raise NotFound(f"voice {voice_id!r} not found")
        f = {k.decode(): v for k, v in raw.items()}
        return VoiceRecord(id=voice_id, name=f["name"].decode(), reference_id=f["reference_id"].decode(),
                           encoder=f.get("encoder", b"").decode(), prompt_text=f.get("prompt_text", b"").decode(),
                           seconds=float(f.get("seconds", b"0")), created_at=f.get("created_at", b"").decode(),
                           audio=f.get("audio", b"") if with_audio else b"")

    async def list(self, tenant: str) -> list[VoiceRecord]:
        ids = sorted(i.decode() for i in await self._call(self.redis.smembers(self._index(tenant))))
        out = []
        for voice_id in ids:
            try:
                out.append(await self.get(tenant, voice_id, with_audio=False))
            except NotFound:   # index entry of a record that was deleted concurrently
                continue
        return out

    async def delete(self, tenant: str, voice_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._key(tenant, voice_id))
        pipe.srem(self._index(tenant), voice_id)
        deleted, _ = await self._call(pipe.execute())
        if not deleted:
            raise NotFound(f"voice {voice_id!r} not found")

    async def close(self) -> None:
        await self.redis.aclose()

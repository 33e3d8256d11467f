"""Registered voices, per tenant, in Redis.

``tts:voice:v1:{tenant}:{id}`` → hash {name, reference_id, encoder, prompt_text, seconds, created_at, audio}
``tts:voices:v1:{tenant}`` → set of ids. Ids are random (``v_`` + 128 bits, see ``is_registered``), so they cannot be guessed; a tenant
never sees another tenant's ids (lookups are scoped by tenant, so a foreign id is simply NOT_FOUND).
The canonical prompt audio is kept with the record so an evicted embedding can be recomputed.

Each tenant's count of voices and their bytes are quota counters (``quotas.py``), checked and incremented in the
script that writes the record, and given back in the script that deletes it: atomic across gateway replicas.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
from dataclasses import dataclass

from shared.errors import InvalidArgument, NotFound

from .quotas import GIVE_LUA, RESERVE_LUA, VOICE_BYTES, VOICES, Quotas, call, quota_key, store_client
from .settings import QuotaSettings

# KEYS: record, index, quota. ARGV[1] = id, ARGV[2..] = quota triples, then the record's field/value pairs.
# Run twice (a retried call), the second does nothing.
_ADD = RESERVE_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local refused = reserve(KEYS[3], ARGV, 2)
if refused then return refused end
redis.call('HSET', KEYS[1], unpack(ARGV, 3 + 3 * tonumber(ARGV[2])))
redis.call('SADD', KEYS[2], ARGV[1])
return false
"""
# KEYS: record, index, quota. ARGV[1] = id. Returns 1 if the record existed.
_DELETE = "#!lua flags=allow-oom\n" + GIVE_LUA + """
local bytes = redis.call('HGET', KEYS[1], 'bytes')
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if n == 1 then
  give(KEYS[3], 'voices', 1)
  give(KEYS[3], 'voice_bytes', bytes)
end
return n
"""

# What a voice is, decided here only: a registered voice's id is ``v_`` and 32 hex digits; any other voice string is
# the name of a decoder engine's built-in voice (the decoder checks those against its Info).
VOICE_ID_PREFIX = "v_"
_VOICE_ID = re.compile(r"v_[0-9a-f]{32}")


def new_voice_id() -> str:
    return VOICE_ID_PREFIX + secrets.token_hex(16)


def is_registered(voice: str, field: str = "config.voice") -> bool:
    """True: ``voice`` is a registered voice's id; False: a built-in voice's name (or ""). A string that claims to be
    an id (``v_...``) but is not of the form is INVALID_ARGUMENT naming ``field``."""
    if not voice.startswith(VOICE_ID_PREFIX):
        return False
    check_voice_id(voice, field)
    return True


def check_voice_id(voice_id: str, field: str = "id") -> str:
    if not voice_id:
        raise InvalidArgument(field, "is empty")
    if not _VOICE_ID.fullmatch(voice_id):
        raise InvalidArgument(field, f"{voice_id[:80]!r} is not a voice id ({VOICE_ID_PREFIX} and 32 hex digits)")
    return voice_id


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
    def __init__(self, url: str, timeout_ms: int = 200, quotas: QuotaSettings | None = None,
                 max_connections: int = 64):
        self.redis = store_client(url, timeout_ms / 1000, timeout_ms / 1000, max_connections)
        self.timeout = timeout_ms / 1000
        self.quotas = Quotas(quotas)
        self._add = self.redis.register_script(_ADD)
        self._delete = self.redis.register_script(_DELETE)

    @staticmethod
    def _key(tenant: str, voice_id: str) -> str:
        return f"tts:voice:v1:{tenant}:{voice_id}"

    @staticmethod
    def _index(tenant: str) -> str:
        return f"tts:voices:v1:{tenant}"

    async def _call(self, coro):
        """Unreachable or slow (``timeout_ms`` × 5) → UNAVAILABLE naming redis; full → RESOURCE_EXHAUSTED."""
        return await call(asyncio.wait_for(coro, self.timeout * 5), "voice store")

    async def add(self, tenant: str, name: str, reference_id: str, encoder: str, prompt_text: str,
                  seconds: float, audio: bytes) -> VoiceRecord:
        rec = VoiceRecord(id=new_voice_id(), name=name, reference_id=reference_id, encoder=encoder,
                          prompt_text=prompt_text, seconds=seconds,
                          created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), audio=audio)
        fields = {"name": name, "reference_id": reference_id, "encoder": encoder, "prompt_text": prompt_text,
                  "seconds": str(seconds), "created_at": rec.created_at, "audio": audio}
        size = sum(len(k) + len(v if isinstance(v, bytes) else str(v).encode()) for k, v in fields.items()) + 64
        fields["bytes"] = str(size)
        deltas = {VOICES.field: 1, VOICE_BYTES.field: size}
        flat = [x for kv in fields.items() for x in kv]
        refused = await self._call(self._add(keys=[self._key(tenant, rec.id), self._index(tenant), quota_key(tenant)],
                                             args=[rec.id, *self.quotas.args(**deltas), *flat]))
        self.quotas.refused(tenant, refused, deltas)
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
        deleted = await self._call(self._delete(keys=[self._key(tenant, voice_id), self._index(tenant),
                                                      quota_key(tenant)], args=[voice_id]))
        if not deleted:
            raise NotFound(f"voice {voice_id!r} not found")

    async def close(self) -> None:
        await self.redis.aclose()

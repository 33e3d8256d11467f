"""Embedding cache: in-process LRU in front of a shared store (Redis by default: ``store.py``), shared by all pods
and tenants, content-addressed.

The store is optional at every moment: down, slow or returning garbage means a miss (computed and served anyway),
counted in ``tts_speaker_cache_total{result="error"}``; the Redis client reconnects on its own.
Value format (schema 2): b"SPK" + version byte + uint16 dim + float32[dim] embedding + float32 seconds + uint32
number of 16 kHz samples + 16 kHz PCM16 + 24 kHz PCM16 (the same stretch; prompt features). Schema 1 values (no
24 kHz audio) are still read.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .store import SharedStore

log = logging.getLogger("speaker.cache")

MAGIC, SCHEMA = b"SPK", 2


@dataclass
class Entry:
    embedding: np.ndarray         # float32
    seconds: float
    pcm16: np.ndarray             # int16, 16 kHz
    pcm24k: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))   # int16, 24 kHz, same stretch


def encode_entry(e: Entry) -> bytes:
    emb = np.asarray(e.embedding, dtype="<f4")
    return (MAGIC + bytes([SCHEMA]) + struct.pack("<H", len(emb)) + emb.tobytes() + struct.pack("<f", e.seconds)
            + struct.pack("<I", len(e.pcm16)) + np.asarray(e.pcm16, dtype="<i2").tobytes()
            + np.asarray(e.pcm24k, dtype="<i2").tobytes())


def decode_entry(raw: bytes) -> Entry | None:
    """None for anything that is not a well-formed schema-1 value (treated as a miss)."""
    try:
        if raw[:3] != MAGIC or raw[3] not in (1, SCHEMA):
            return None
        (dim,) = struct.unpack_from("<H", raw, 4)
        off = 6 + 4 * dim
        emb = np.frombuffer(raw, dtype="<f4", count=dim, offset=6).astype(np.float32)
        (seconds,) = struct.unpack_from("<f", raw, off)
        pcm24 = b""
        if raw[3] == 1:
            pcm = raw[off + 4:]
        else:
            (n16,) = struct.unpack_from("<I", raw, off + 4)
            pcm, pcm24 = raw[off + 8: off + 8 + 2 * n16], raw[off + 8 + 2 * n16:]
            if len(pcm) != 2 * n16:
                return None
        if len(pcm) % 2 or len(pcm24) % 2 or not np.isfinite(emb).all():
            return None
        return Entry(emb, float(seconds), np.frombuffer(pcm, dtype="<i2").copy(),
                     np.frombuffer(pcm24, dtype="<i2").copy())
    except (IndexError, struct.error, ValueError):
        return None


class EmbeddingCache:
    def __init__(self, store: SharedStore | None, ttl_s: int = 7 * 86400, timeout_ms: int = 50,
                 local_entries: int = 256, on_result=None):
        self.store = store
        self.ttl_s = ttl_s
        self.timeout = timeout_ms / 1000
        self.local: OrderedDict[str, Entry] = OrderedDict()
        self.local_entries = local_entries
        self.on_result = on_result or (lambda result: None)
        self.store_up = True
        self._last_error_log = 0.0

    def _error(self, op: str, exc: BaseException) -> None:
        self.store_up = False
        self.on_result("error")
        now = time.monotonic()
        if now - self._last_error_log > 30:
            self._last_error_log = now
            log.warning("shared cache unavailable; serving without it",
                        extra={"op": op, "error": f"{type(exc).__name__}: {exc}"})

    def _remember(self, key: str, entry: Entry) -> None:
        self.local[key] = entry
        self.local.move_to_end(key)
        while len(self.local) > self.local_entries:
            self.local.popitem(last=False)

    async def get(self, key: str) -> Entry | None:
        if key in self.local:
            self.local.move_to_end(key)
            return self.local[key]
        if self.store is None:
            return None
        try:
            raw = await asyncio.wait_for(self.store.get(key, self.ttl_s), self.timeout)
            self.store_up = True
        except Exception as exc:  # noqa: BLE001 - any store trouble is a miss
            self._error("get", exc)
            return None
        if raw is None:
            return None
        entry = decode_entry(raw)
        if entry is None:
            self._error("decode", ValueError("garbage value"))
            return None
        self._remember(key, entry)
        return entry

    async def put(self, key: str, entry: Entry) -> None:
        self._remember(key, entry)
        if self.store is None:
            return
        try:
            await asyncio.wait_for(self.store.set(key, encode_entry(entry), self.ttl_s), self.timeout * 4)
            self.store_up = True
        except Exception as exc:  # noqa: BLE001
            self._error("set", exc)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

"""Speaker engine: canonical audio → embedding, cached by content hash and encoder version, computed once."""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from shared.errors import InvalidArgument, NotFound

from .audio import canonical
from .cache import EmbeddingCache, Entry


@dataclass
class Embedding:
    reference_id: str
    encoder: str
    version: str
    embedding: np.ndarray
    seconds: float
    pcm16: np.ndarray
    cache_hit: bool
    warnings: list[str] = field(default_factory=list)
    pcm24k: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))


class SpeakerEngine:
    def __init__(self, encoder, cache: EmbeddingCache, max_audio_bytes: int = 10 * 1024 * 1024,
                 compute_concurrency: int = 1):
        self.encoder = encoder
        self.cache = cache
        self.max_audio_bytes = max_audio_bytes
        self._gate = asyncio.Semaphore(compute_concurrency)
        self._inflight: dict[str, asyncio.Future] = {}
        self.hits = self.misses = self.computations = 0

    def key(self, reference_id: str) -> str:
        return f"tts:spk:v1:{self.encoder.name}@{self.encoder.version}:{reference_id}"

    async def warmup(self) -> None:
        await asyncio.to_thread(self.encoder.load)
        t = np.linspace(0, 2, 32000, dtype=np.float32)
        await asyncio.to_thread(self.encoder.embed, 0.1 * np.sin(2 * np.pi * 220 * t))

    async def embed(self, data: bytes) -> Embedding:
        pcm16, pcm24, warnings = await asyncio.to_thread(canonical, data, self.max_audio_bytes)
        reference_id = hashlib.sha256(pcm16.astype("<i2").tobytes()).hexdigest()
        key = self.key(reference_id)
        entry = await self.cache.get(key)
        hit = entry is not None
        if hit:
            self.hits += 1
        else:
            self.misses += 1
            entry = await self._compute_once(key, pcm16, pcm24)
        return Embedding(reference_id, self.encoder.name, self.encoder.version, entry.embedding, entry.seconds,
                         entry.pcm16, hit, warnings, entry.pcm24k)

    async def _compute_once(self, key: str, pcm16: np.ndarray, pcm24: np.ndarray) -> Entry:
        """Single flight: concurrent requests for the same new audio share one computation."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with self._gate:
                audio = pcm16.astype(np.float32) / 32768.0
                emb = await asyncio.to_thread(lambda: self.encoder.embed(audio).numpy().astype(np.float32))
                self.computations += 1
            entry = Entry(emb, len(pcm16) / 16000, pcm16, pcm24)
            await self.cache.put(key, entry)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()        # mark retrieved: waiters re-raise it
            raise
        finally:
            self._inflight.pop(key, None)

    async def get(self, reference_id: str, encoder: str = "") -> Embedding:
        if encoder and encoder != self.encoder.name:
            raise InvalidArgument("encoder", f"this service runs {self.encoder.name!r}, not {encoder!r}")
        if len(reference_id) != 64 or any(c not in "0123456789abcdef" for c in reference_id):
            raise InvalidArgument("reference_id", "must be 64 lowercase hex characters")
        entry = await self.cache.get(self.key(reference_id))
        if entry is None:
            raise NotFound(f"reference {reference_id[:12]}… is not cached; send the audio again with Embed")
        self.hits += 1
        return Embedding(reference_id, self.encoder.name, self.encoder.version, entry.embedding, entry.seconds,
                         entry.pcm16, True, pcm24k=entry.pcm24k)

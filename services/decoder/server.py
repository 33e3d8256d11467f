"""Decoder servicer: frontend segments + voice in, audio chunks out, over one bidi stream per utterance."""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from shared.aio import race
from shared.audio import float32_bytes
from shared.errors import InvalidArgument
from shared.limits import CHUNK_SIZE_MAX, SPEED_MAX, SPEED_MIN, STREAM_IDLE_TIMEOUT_S, chunk_size_ok, speed_ok
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.frontend.v1 import frontend_pb2

from .engine.base import Engine, Pronunciation, SegmentInput, StreamOptions, Voice, WordInput, warn_once
from .metrics import (ACTIVE_STREAMS, CACHE_BYTES, CHUNK_SECONDS, FIRST_CHUNK, HEADROOM, MODEL_SECONDS, THROUGHPUT,
                      TOKENS_PER_SECOND)

log = logging.getLogger("decoder")


def segment_from_proto(seg) -> SegmentInput:
    return SegmentInput(
        index=seg.index, text=seg.text, normalized=seg.normalized,
        words=[WordInput(w.text, w.lang, list(w.pinyin), span=(w.span.start, w.span.end) if w.HasField("span") else None,
                         citation=list(w.citation_pinyin),
                         english=[Pronunciation(p.text, p.arpabet, p.spelled) for p in w.english])
               for w in seg.words])


def timings_to_proto(timings, offset: int) -> list:
    """An engine chunk's ``Timing``s (samples from the chunk's first sample) → ``decoder.v1.Timing``s in the Decode
    stream's timeline (``offset``: the stream's samples before this chunk)."""
    return [decoder_pb2.Timing(span=frontend_pb2.Span(start=t.start, end=t.end), start_sample=offset + t.start_sample,
                               end_sample=offset + t.end_sample, silent=t.silent) for t in timings]


def voice_from_config(cfg) -> Voice:
    spk = cfg.speaker
    voice = Voice(name=cfg.voice, reference_id=spk.reference_id, encoder=spk.encoder, prompt_text=spk.prompt_text,
                  prompt_segments=[segment_from_proto(s) for s in spk.prompt_segments])
    if len(spk.embedding):
        voice.embedding = np.asarray(spk.embedding, dtype=np.float32)
    if spk.prompt_pcm16k:
        if len(spk.prompt_pcm16k) % 2:
            raise InvalidArgument("config.speaker.prompt_pcm16k", "odd number of bytes for PCM16")
        voice.prompt_pcm16k = np.frombuffer(spk.prompt_pcm16k, dtype="<i2").astype(np.float32) / 32768.0
    if spk.prompt_pcm24k:
        if len(spk.prompt_pcm24k) % 2:
            raise InvalidArgument("config.speaker.prompt_pcm24k", "odd number of bytes for PCM16")
        voice.prompt_pcm24k = np.frombuffer(spk.prompt_pcm24k, dtype="<i2").astype(np.float32) / 32768.0
    return voice


class DecoderServicer(decoder_pb2_grpc.DecoderServicer):
    def __init__(self, engines: dict[str, Engine], default_engine: str, idle_timeout_s: float = STREAM_IDLE_TIMEOUT_S):
        self.engines = engines
        self.default_engine = default_engine
        self.idle_timeout_s = idle_timeout_s
        # earlier names of the engines (accepted for one release, with a warning)
        self.aliases = {alias: name for name, engine in engines.items() for alias in engine.aliases}
        for name, engine in engines.items():
            if engine.stats().throughput is not None:     # engines that measure real-time capacity: read at scrape time
                HEADROOM.labels(name).set_function(lambda e=engine: e.stats().headroom_streams)
                THROUGHPUT.labels(name).set_function(lambda e=engine: e.stats().throughput)
            for stage in engine.stats().model_seconds:      # where its model time goes (a profile, at scrape time)
                MODEL_SECONDS.labels(name, stage).set_function(
                    lambda e=engine, st=stage: e.stats().model_seconds.get(st, 0.0))

    def _engine(self, name: str) -> Engine:
        name = name or self.default_engine
        if name in self.aliases:
            warn_once(f"model:{name}", f"engine {name!r} is deprecated: it is now {self.aliases[name]!r} (the old name "
                      "is accepted for one release)", engine=self.aliases[name])
            name = self.aliases[name]
        if name not in self.engines:
            raise InvalidArgument("config.engine", f"unknown or disabled engine {name!r}; enabled: {', '.join(self.engines)}")
        return self.engines[name]

    def _update_gauges(self) -> None:
        for name, engine in self.engines.items():
            stats = engine.stats()
            ACTIVE_STREAMS.labels(name).set(stats.active_streams)
            CACHE_BYTES.labels(name).set(stats.cache_bytes)

    async def Decode(self, request_iterator, context):
        requests = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(requests.__anext__(), self.idle_timeout_s)
        except StopAsyncIteration:
            return
        if first.WhichOneof("request") != "config":
            raise InvalidArgument("config", "the first message of a Decode stream must be config")
        cfg = first.config
        engine = self._engine(cfg.engine)
        speed = cfg.speed or 1.0
        if not speed_ok(speed):
            raise InvalidArgument("config.speed", f"{speed} is outside {SPEED_MIN}..{SPEED_MAX}")
        if not chunk_size_ok(cfg.chunk_size):
            raise InvalidArgument("config.chunk_size", f"{cfg.chunk_size} is outside 0..{CHUNK_SIZE_MAX}")
        options = StreamOptions(
            chunk_size=cfg.chunk_size, seed=cfg.seed if cfg.HasField("seed") else None, speed=speed,
            use_cache=cfg.use_cache if cfg.HasField("use_cache") else True, request_id=cfg.request_id,
            offline=cfg.offline, alignment=cfg.alignment, tenant=cfg.tenant,
            batch=cfg.priority == decoder_pb2.BATCH)
        stream = engine.open_stream(voice_from_config(cfg), options)
        self._update_gauges()
        t0 = time.perf_counter()

        async def pump():
            while True:
                try:
                    req = await asyncio.wait_for(requests.__anext__(), self.idle_timeout_s)
                except StopAsyncIteration:
                    break
                if req.WhichOneof("request") != "segment":
                    raise InvalidArgument("config", "config may only be sent once, as the first message")
                stream.feed(segment_from_proto(req.segment))
            stream.end()

        feeder = asyncio.get_running_loop().create_task(pump())
        samples = tokens = 0
        first_chunk = True
        try:
            async for chunk in race(stream.chunks(), feeder):
                if first_chunk:
                    FIRST_CHUNK.labels(engine.name).observe(time.perf_counter() - t0)
                    first_chunk = False
                n = len(chunk.audio)
                yield decoder_pb2.DecodeResponse(chunk=decoder_pb2.AudioChunk(
                    pcm=float32_bytes(chunk.audio), sample_rate=chunk.sample_rate, segment_index=chunk.segment_index,
                    offset_samples=samples, num_samples=n, tokens=chunk.tokens, segment_end=chunk.segment_end,
                    alignment=timings_to_proto(chunk.alignment, samples),    # engines time only when asked
                    alignment_estimated=chunk.alignment_estimated))
                CHUNK_SECONDS.labels(engine.name).inc(n / chunk.sample_rate)
                samples += n
                tokens += chunk.tokens
            await feeder
            elapsed = time.perf_counter() - t0
            if tokens and elapsed > 0:
                TOKENS_PER_SECOND.labels(engine.name).observe(tokens / elapsed)
            yield decoder_pb2.DecodeResponse(summary=decoder_pb2.DecodeSummary(
                tokens=tokens, samples=samples, processing_ms=(time.perf_counter() - t0) * 1000,
                engine=engine.name, voice=stream.voice_name, conditioning=stream.conditioning,
                compute_per_audio_s=engine.stats().compute_per_audio_s))
        except asyncio.TimeoutError:
            raise InvalidArgument("segment", f"no segment and no half-close for {self.idle_timeout_s:.0f} s; stream aborted") from None
        finally:
            feeder.cancel()
            await stream.close()
            self._update_gauges()

    async def CheckAdmission(self, request, context):
        engine = self._engine(request.engine)
        decision = engine.check_admission(StreamOptions(tenant=request.tenant, request_id=request.hold_request_id,
                                                        batch=request.priority == decoder_pb2.BATCH),
                                          hold=bool(request.hold_request_id))
        return decoder_pb2.CheckAdmissionResponse(
            admitted=decision.ok, limit=decision.limit, retry_after_s=decision.retry_after_s,
            reason="" if decision.ok else decision.message(engine.name))

    async def ClearCache(self, request, context):
        freed_bytes = freed_streams = 0
        for engine in self.engines.values():
            b, s = engine.clear_cache()
            freed_bytes += b
            freed_streams += s
        self._update_gauges()
        log.info("cache cleared", extra={"freed_bytes": freed_bytes, "freed_streams": freed_streams})
        return decoder_pb2.ClearCacheResponse(freed_bytes=freed_bytes, freed_streams=freed_streams)

    async def Info(self, request, context):
        infos = []
        for name, engine in self.engines.items():
            stats = engine.stats()
            infos.append(decoder_pb2.EngineInfo(
                name=name, sample_rate=engine.sample_rate, voices=engine.voices(), loaded=True,
                supports_cloning=engine.supports_cloning, active_streams=stats.active_streams,
                cache_bytes=stats.cache_bytes, cache_budget_bytes=stats.cache_budget_bytes,
                buffered_bytes=stats.buffered_bytes, stalled_streams=stats.stalled_streams,
                throughput=stats.throughput or 0.0, compute_per_audio_s=stats.compute_per_audio_s,
                headroom_streams=stats.headroom_streams, speaker_encoder=engine.speaker_encoder,
                segment_min_units=engine.segment_units[0], segment_max_units=engine.segment_units[1],
                model=engine.model_description, languages=engine.languages, license=engine.license, aliases=engine.aliases))
        return decoder_pb2.InfoResponse(engines=infos, default_engine=self.default_engine)

"""The gateway's engine: one utterance through frontend → decoder, all stages running concurrently.

Text pieces flow to the frontend's Normalize stream as they arrive; each segment it emits goes straight to the
decoder's Decode stream; audio chunks come back, are resampled/encoded for the client and sent on. Bounded queues
between the stages give back-pressure; if any part fails, the whole utterance fails at once with that status.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc
import numpy as np

from shared.aio import END, abandon, drain, race
from shared.audio import AudioEncoder, float32_from_bytes
from shared.encodings import ENCODINGS as FILE_ENCODINGS
from shared.errors import InvalidArgument, TTSError, from_rpc_error
from shared.internal_auth import client_interceptors
from shared.playback import PlaybackClock
from shared.speaker_encoders import encoder_id
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from tts.speaker.v1 import speaker_pb2, speaker_pb2_grpc
from tts.v1 import tts_pb2

from .metrics import FIRST_CHUNK, PROMPT_RESENDS, RTF
from .settings import GatewaySettings
from .validate import ENCODINGS, check_model
from .voices import VoiceRegistry, is_registered

log = logging.getLogger("gateway.pipeline")

FLUSH = object()


@dataclass
class Plan:
    """Everything resolved before the first text piece is processed."""

    request_id: str
    tenant: str
    engine: str
    voice_label: str
    decode_config: decoder_pb2.DecodeConfig
    normalize_config: frontend_pb2.NormalizeConfig
    sample_rate: int
    encoding: str
    metadata: tuple = field(default_factory=tuple)
    # a registered voice goes to the decoder by reference id only; if that decoder does not hold its prompt
    # (NOT_FOUND), this gives the full conditioning (embedding + prompt audio) to resend with
    full_speaker: Callable[[], Awaitable[decoder_pb2.SpeakerConditioning]] | None = None


@dataclass
class Whole:
    """The result of ``Pipeline.synthesize_whole``."""

    audio: bytes                                    # a complete file in the plan's encoding
    summary: tts_pb2.SynthesisSummary | None
    segments: list                                  # the frontend's segments, in order


class Stages:
    """Channels and stubs to the three stages."""

    def __init__(self, settings: GatewaySettings):
        opts = [("grpc.max_receive_message_length", settings.max_message_mb * 1024 * 1024),
                ("grpc.max_send_message_length", settings.max_message_mb * 1024 * 1024),
                ("grpc.keepalive_time_ms", 30_000),
                # a restarted stage is used again within a second or two, not after minutes of backoff
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
                # with a dns:/// target naming a headless Service, spread calls over all pods
                ("grpc.lb_policy_name", "round_robin"),
                # a fixed 256 KB stream window instead of BDP growth to ~4 MB: what a stage may send ahead of a slow
                # client stays ~2.7 s of decoder audio per stream, so back-pressure reaches the decoder's queue
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", 256 * 1024)]
        self.channels = []

        def channel(addr):
            ch = grpc.aio.insecure_channel(addr, options=opts, interceptors=client_interceptors() or None)
            self.channels.append(ch)
            return ch

        self.frontend = frontend_pb2_grpc.FrontendStub(channel(settings.frontend_addr))
        self.speaker = speaker_pb2_grpc.SpeakerStub(channel(settings.speaker_addr))
        self._decoder_channels = [channel(a.strip()) for a in settings.decoder_addrs.split(",") if a.strip()]
        self.decoders = [decoder_pb2_grpc.DecoderStub(ch) for ch in self._decoder_channels]
        self._next_decoder = itertools.cycle(range(len(self.decoders)))
        # what each decoder last reported about its speed (compute s per audio s, one stream alone), and how many
        # streams this gateway has open on it: together the per-stream rate the frontend sizes segments by
        self._cost = [0.0] * len(self.decoders)
        self._open = [0] * len(self.decoders)

    def decoder_rtf(self, stub) -> float:
        """The compute seconds per second of audio a new stream on ``stub`` will get (0 = not known yet)."""
        i = self.decoders.index(stub)
        return self._cost[i] * (self._open[i] + 1)

    def report_cost(self, stub, cost: float) -> None:
        if cost > 0:
            self._cost[self.decoders.index(stub)] = cost

    def opened(self, stub, delta: int) -> None:
        self._open[self.decoders.index(stub)] += delta

    def decoder(self, exclude=()) -> decoder_pb2_grpc.DecoderStub:
        """Round-robin, skipping decoders in ``exclude`` and, while another one is up, those whose channel fails."""
        fallback = None
        for _ in range(len(self.decoders)):
            i = next(self._next_decoder)
            stub = self.decoders[i]
            if stub in exclude:
                continue
            if self._decoder_channels[i].get_state() != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                return stub
            fallback = fallback or stub
        return fallback or self.decoders[next(self._next_decoder)]

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


async def call_stage(stage: str, coro):
    try:
        return await coro
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(stage, err) from None


class DecoderFeed:
    """The requests of one Decode stream (config, then segments), kept until a decoder answers so the stream can be
    replayed on another decoder. ``put`` waits while the current reader is ``limit`` items behind (back-pressure)."""

    def __init__(self, config, limit: int):
        self.items: list = [config]
        self.done = False
        self.limit = max(1, limit)
        self.pos = 0                 # items taken by the current reader
        self.gen = 0
        self.keep = True             # False once a decoder answered: taken items are dropped
        self.cond = asyncio.Condition()

    async def put(self, item) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: len(self.items) - self.pos < self.limit)
            self.items.append(item)
            self.cond.notify_all()

    async def end(self) -> None:
        async with self.cond:
            self.done = True
            self.cond.notify_all()

    def started(self) -> None:
        self.keep = False
        for i in range(self.pos):
            self.items[i] = None

    def reader(self):
        """A new iterator over all requests from the first; an older reader no longer counts for back-pressure."""
        self.gen += 1
        self.pos = 0
        return self._read(self.gen)

    async def _read(self, gen: int):
        i = 0
        while True:
            async with self.cond:
                await self.cond.wait_for(lambda: i < len(self.items) or self.done or gen != self.gen)
                if i >= len(self.items) or gen != self.gen:
                    return        # the end, or a newer reader replaced this one (its call was dropped)
                item = self.items[i]
                if not self.keep:
                    self.items[i] = None
                i += 1
                if gen == self.gen:
                    self.pos = i
                    self.cond.notify_all()
            yield item


class Pipeline:
    def __init__(self, settings: GatewaySettings, stages: Stages, voices: VoiceRegistry):
        self.settings = settings
        self.stages = stages
        self.voices = voices
        self._builtin: dict[str, list[str]] = {}
        self._encoders: dict[str, str] = {}       # engine → the speaker encoder id its model needs ("" = any)
        self._segment_units: dict[str, tuple[int, int]] = {}   # engine → the segment sizes its LM reads best
        self._default_engine = ""

    # ---- voices ------------------------------------------------------------------------------------------------
    async def embed(self, audio: bytes, metadata: tuple, timeout: float | None, encoder: str = ""):
        return await call_stage("speaker", self.stages.speaker.Embed(
            speaker_pb2.EmbedRequest(audio=audio, encoder=encoder), metadata=metadata, timeout=timeout))

    async def conditioning_for(self, tenant: str, voice_id: str, metadata, timeout, encoder: str = ""):
        """A registered voice's embedding from ``encoder`` (the one the decoder engine needs; "" = the voice's own),
        recomputed from the stored audio when that encoder's result is not cached."""
        rec = await self.voices.get(tenant, voice_id)
        try:
            emb = await call_stage("speaker", self.stages.speaker.GetEmbedding(
                speaker_pb2.GetEmbeddingRequest(reference_id=rec.reference_id, encoder=encoder or rec.encoder),
                metadata=metadata, timeout=timeout))
        except TTSError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            emb = None
        if emb is None:                      # evicted from the cache: recompute from the stored audio
            emb = await self.embed(rec.audio, metadata, timeout, encoder)
        return emb, rec

    async def builtin_voices(self) -> dict[str, list[str]]:
        if not self._builtin:
            info = await call_stage("decoder", self.stages.decoder().Info(decoder_pb2.InfoRequest(), timeout=5))
            self._encoders = {e.name: e.speaker_encoder for e in info.engines}
            self._segment_units = {e.name: (e.segment_min_units, e.segment_max_units) for e in info.engines}
            self._default_engine = info.default_engine
            self._builtin = {e.name: list(e.voices) for e in info.engines}
        return self._builtin

    async def models(self) -> tuple[list[str], str]:
        """The engines the decoders serve (their ``Info``) and the default one ("" = the decoders' default)."""
        engines = await self.builtin_voices()
        return list(engines), self.settings.default_model or self._default_engine

    async def check_model(self, model: str) -> None:
        """``config.model`` is one the decoders serve (INVALID_ARGUMENT naming them); unchecked while no decoder
        answers ``Info`` (the decoder refuses an unknown engine itself)."""
        try:
            known, _ = await self.models()
        except TTSError:
            return
        check_model(model, known)

    async def speaker_encoder(self, engine: str) -> str:
        """The speaker encoder id the decoder's ``engine`` needs ("" = any, the speaker stage's default)."""
        try:
            await self.builtin_voices()
        except TTSError:                # no decoder answers Info now: the speaker's default; the decoder checks it
            return ""
        return self._encoders.get(engine or self._default_engine, "")

    async def segment_units(self, engine: str) -> tuple[int, int]:
        """(min, max) units the decoder's ``engine`` wants per segment ((0, 0) = as the frontend cuts them)."""
        try:
            await self.builtin_voices()
        except TTSError:
            return 0, 0
        return self._segment_units.get(engine or self._default_engine, (0, 0))

    async def prompt_segments(self, prompt_text: str, metadata, timeout) -> list:
        """The prompt transcript through the frontend (numbers, codes, readings: what the prompt audio says), for an
        engine whose LM reads it; [] when there is none."""
        if not prompt_text.strip():
            return []
        resp = await call_stage("frontend", self.stages.frontend.Analyze(
            frontend_pb2.AnalyzeRequest(text=prompt_text), metadata=metadata, timeout=timeout))
        return list(resp.segments)

    # ---- planning ----------------------------------------------------------------------------------------------
    async def plan(self, tenant: str, cfg, metadata: tuple, deadline: float | None, *, offline: bool = False) -> Plan:
        """``offline``: the caller wants the whole audio at once (unary Synthesize, batch lines), so the decoder may
        render each segment in one piece (glmtts: the full-attention flow of the published offline inference)."""
        await self.check_model(cfg.model)
        request_id = dict(metadata).get("x-request-id") or uuid.uuid4().hex[:16]
        metadata = (*[(k, v) for k, v in metadata if k not in ("x-request-id", "x-tenant")],
                    ("x-request-id", request_id), ("x-tenant", tenant))
        timeout = max(deadline - time.time(), 0.001) if deadline else 30.0
        dcfg = decoder_pb2.DecodeConfig(chunk_size=cfg.chunk_size, speed=cfg.speed, request_id=request_id,
                                        offline=offline)
        if cfg.HasField("seed"):
            dcfg.seed = cfg.seed
        if cfg.HasField("use_cache"):
            dcfg.use_cache = cfg.use_cache
        engine = cfg.model or self.settings.default_model
        source = cfg.WhichOneof("voice_source")
        voice_label = ""
        full_speaker = None
        if source == "voice" and is_registered(cfg.voice, "config.voice"):
            # by reference: no speaker call, no prompt audio on the wire while the decoder holds the prompt
            rec = await self.voices.get(tenant, cfg.voice, with_audio=False)
            prompt_text = cfg.prompt_text or rec.prompt_text
            voice_label = cfg.voice
            engine = engine or self.settings.cloning_model
            encoder = await self.speaker_encoder(engine)       # the one the decoder engine's model needs
            ref_encoder = encoder or rec.encoder                 # the same string in both messages (prompt cache key)
            prompt_segments = await self.prompt_segments(prompt_text, metadata, timeout)
            dcfg.speaker.CopyFrom(decoder_pb2.SpeakerConditioning(
                reference_id=rec.reference_id, encoder=ref_encoder, prompt_text=prompt_text,
                prompt_segments=prompt_segments))
            voice_id = cfg.voice

            async def full_speaker():
                left = max(deadline - time.time(), 0.001) if deadline else 30.0
                emb, _ = await self.conditioning_for(tenant, voice_id, metadata, left, encoder)
                return decoder_pb2.SpeakerConditioning(
                    reference_id=emb.reference_id, embedding=emb.embedding, encoder=ref_encoder,
                    prompt_pcm16k=emb.prompt_pcm16k, prompt_pcm24k=emb.prompt_pcm24k, prompt_text=prompt_text,
                    prompt_segments=prompt_segments)
        elif source == "reference_audio":
            engine = engine or self.settings.cloning_model
            encoder = await self.speaker_encoder(engine)
            try:
                emb = await self.embed(cfg.reference_audio, metadata, timeout, encoder)
            except TTSError as exc:
                if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                raise InvalidArgument("config.reference_audio", exc.message.removeprefix("audio: ")) from None
            prompt_text = cfg.prompt_text
            voice_label = "ref:" + emb.reference_id
            dcfg.speaker.CopyFrom(decoder_pb2.SpeakerConditioning(
                reference_id=emb.reference_id, embedding=emb.embedding,
                encoder=encoder_id(emb.encoder, emb.encoder_version),
                prompt_pcm16k=emb.prompt_pcm16k, prompt_pcm24k=emb.prompt_pcm24k, prompt_text=prompt_text,
                prompt_segments=await self.prompt_segments(prompt_text, metadata, timeout)))
        elif source == "voice":
            dcfg.voice = voice_label = cfg.voice
        dcfg.engine = engine
        merge_min, merge_max = await self.segment_units(engine)
        return Plan(
            request_id=request_id, tenant=tenant, engine=engine, voice_label=voice_label, decode_config=dcfg,
            full_speaker=full_speaker,
            normalize_config=frontend_pb2.NormalizeConfig(language=cfg.language, phoneme_mode=cfg.phoneme_mode,
                                                          request_id=request_id, merge_min_units=merge_min,
                                                          merge_max_units=merge_max, whole_text=offline),
            sample_rate=cfg.sample_rate or self.settings.default_sample_rate,
            encoding=ENCODINGS[cfg.encoding], metadata=metadata)

    # ---- running -----------------------------------------------------------------------------------------------
    async def run(self, plan: Plan, pieces, deadline: float | None, on_segment=None):
        """``pieces``: async iterator of str (text) or FLUSH. Yields tts.v1 StreamingSynthesizeResponse.
        ``on_segment(segment)``, if given, sees each frontend segment (normalized text, phonemes) as it arrives."""
        t_start = time.perf_counter()
        t_first_text: list[float] = []
        timeout = max(deadline - time.time(), 0.001) if deadline else self.settings.max_stream_seconds
        fe_q: asyncio.Queue = asyncio.Queue(maxsize=self.settings.stage_queue)
        dec_feed = DecoderFeed(decoder_pb2.DecodeRequest(config=plan.decode_config), self.settings.stage_queue)
        # the decoder is chosen now, so the frontend sizes segments by its measured rate (the call opens later)
        dec_stub = self.stages.decoder()
        dec_tried = [dec_stub]
        normalize_config = frontend_pb2.NormalizeConfig()
        normalize_config.CopyFrom(plan.normalize_config)
        normalize_config.decoder_rtf = self.stages.decoder_rtf(dec_stub)
        await fe_q.put(frontend_pb2.NormalizeRequest(config=normalize_config))
        fe_call = self.stages.frontend.Normalize(drain(fe_q), metadata=plan.metadata, timeout=timeout)
        self.stages.opened(dec_stub, +1)
        playback = PlaybackClock()
        # the Decode call (which takes a decoder slot) opens only once a segment is ready: a stream whose client
        # is still typing, or never sends a complete sentence, holds no decoder capacity
        dec_call = None
        dec_ready = asyncio.Event()
        segments: dict[int, frontend_pb2.Segment] = {}

        async def feed_frontend():
            try:
                async for piece in pieces:
                    if not t_first_text:
                        t_first_text.append(time.perf_counter())
                    if piece is FLUSH:
                        await fe_q.put(frontend_pb2.NormalizeRequest(flush=True))
                    else:
                        await fe_q.put(frontend_pb2.NormalizeRequest(text=piece))
            finally:
                await fe_q.put(END)

        async def frontend_to_decoder():
            try:
                async for resp in fe_call:
                    segments[resp.segment.index] = resp.segment
                    if on_segment is not None:
                        on_segment(resp.segment)
                    await dec_feed.put(decoder_pb2.DecodeRequest(segment=resp.segment))
                    dec_ready.set()
            except grpc.aio.AioRpcError as err:
                raise from_rpc_error("frontend", err) from None
            finally:
                await dec_feed.end()
                dec_ready.set()

        async def first_segment():
            await dec_ready.wait()
            yield None

        helpers = [asyncio.get_running_loop().create_task(feed_frontend()),
                   asyncio.get_running_loop().create_task(frontend_to_decoder())]
        encoder: AudioEncoder | None = None
        out_samples = 0
        first_latency = None
        summary = None
        last_segment = None
        try:
            async for _ in race(first_segment(), *helpers):    # a failing helper (frontend, bad text) ends it here
                pass
            if not segments:
                for task in helpers:
                    await task
                raise InvalidArgument("text", "nothing in it can be spoken: the voices read Chinese and English; "
                                              "other scripts, emoji and symbols are skipped")
            timeout = max(deadline - time.time(), 0.001) if deadline else self.settings.max_stream_seconds
            dec_call = dec_stub.Decode(dec_feed.reader(), metadata=plan.metadata, timeout=timeout)
            answered = False        # has the decoder sent anything? (until then the stream can move elsewhere)
            while True:
                try:
                    async for resp in race(dec_call, *helpers):
                        if not answered:
                            answered = True
                            dec_feed.started()
                        if resp.WhichOneof("response") == "summary":
                            summary = resp.summary
                            self.stages.report_cost(dec_stub, summary.compute_per_audio_s)
                            continue
                        chunk = resp.chunk
                        if encoder is None:
                            encoder = AudioEncoder(chunk.sample_rate, plan.sample_rate, plan.encoding)
                        data, n = encoder.encode(float32_from_bytes(chunk.pcm))
                        last_segment = segments.get(chunk.segment_index)
                        if n == 0 and not data:
                            continue
                        if first_latency is None:
                            first_latency = time.perf_counter() - (t_first_text[0] if t_first_text else t_start)
                            FIRST_CHUNK.labels(plan.engine or "default").observe(first_latency)
                        playback.deliver(time.perf_counter(), n / plan.sample_rate)
                        yield self._chunk(plan, data, out_samples, n, chunk.segment_index, last_segment, chunk.segment_end)
                        out_samples += n
                    break
                except grpc.aio.AioRpcError as err:
                    if not answered and err.code() == grpc.StatusCode.NOT_FOUND and plan.full_speaker is not None:
                        # that decoder does not hold the voice's prompt: resend the stream with its audio, once
                        log.info("decoder lacks the voice prompt; resending with the reference audio",
                                 extra={"reference_id": plan.decode_config.speaker.reference_id[:16]})
                        PROMPT_RESENDS.inc()
                        dec_call.cancel()
                        cfg = decoder_pb2.DecodeConfig()
                        cfg.CopyFrom(plan.decode_config)
                        cfg.speaker.CopyFrom(await plan.full_speaker())
                        plan.full_speaker = None
                        dec_feed.items[0] = decoder_pb2.DecodeRequest(config=cfg)
                        timeout = max(deadline - time.time(), 0.001) if deadline else self.settings.max_stream_seconds
                        dec_call = dec_stub.Decode(dec_feed.reader(), metadata=plan.metadata, timeout=timeout)
                        continue
                    retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
                    if answered or err.code() not in retryable or len(dec_tried) >= len(self.stages.decoders):
                        raise from_rpc_error("decoder", err) from None
                    # no audio reached the client yet: replay config + segments on another decoder (this one is
                    # down, or at its real-time capacity)
                    log.warning("decoder %s before the stream started; retrying on another decoder",
                                "unavailable" if err.code() == grpc.StatusCode.UNAVAILABLE else "at capacity",
                                extra={"error": err.details(), "attempt": len(dec_tried) + 1})
                    dec_call.cancel()
                    self.stages.opened(dec_stub, -1)
                    dec_stub = self.stages.decoder(exclude=dec_tried)
                    self.stages.opened(dec_stub, +1)
                    dec_tried.append(dec_stub)
                    timeout = max(deadline - time.time(), 0.001) if deadline else self.settings.max_stream_seconds
                    dec_call = dec_stub.Decode(dec_feed.reader(), metadata=plan.metadata, timeout=timeout)
            for task in helpers:
                await task
            if encoder is not None:
                data, n = encoder.encode(np.zeros(0, np.float32), last=True)
                if n or data:       # the resampler's tail and what a codec still held (last frames, last page)
                    idx = last_segment.index if last_segment is not None else 0
                    yield self._chunk(plan, data, out_samples, n, idx, last_segment, True)
                    out_samples += n
            if out_samples == 0:
                raise InvalidArgument("text", "nothing in it can be spoken: the voices read Chinese and English; "
                                              "other scripts, emoji and symbols are skipped")
            processing = time.perf_counter() - t_start
            audio_s = out_samples / plan.sample_rate
            rtf = processing / audio_s if audio_s else 0.0
            if audio_s:
                RTF.labels(plan.engine or "default").observe(rtf)
            yield tts_pb2.StreamingSynthesizeResponse(summary=tts_pb2.SynthesisSummary(
                audio_ms=audio_s * 1000, first_chunk_latency_ms=(first_latency or 0) * 1000,
                tokens=summary.tokens if summary else 0, real_time_factor=rtf, segments=len(segments),
                processing_ms=processing * 1000, engine=summary.engine if summary else plan.engine,
                # what the decoder says it spoke, never what we asked for
                voice=summary.voice if summary and summary.voice else plan.voice_label,
                conditioning=summary.conditioning if summary else "", request_id=plan.request_id,
                min_playback_margin_ms=(playback.min_margin_s or 0.0) * 1000, stalls=playback.stalls,
                stall_ms=playback.stall_s * 1000))
        finally:
            self.stages.opened(dec_stub, -1)
            abandon(*helpers)       # their errors, if any, were raised above already (or the call was cancelled)
            fe_call.cancel()
            if dec_call is not None:
                dec_call.cancel()

    async def synthesize_whole(self, plan: Plan, text: str, deadline: float | None, *, max_bytes: int = 0,
                               too_long: str = "") -> Whole:
        """One text, all its audio at once (unary Synthesize, a batch line): a complete file in the plan's encoding.
        Over ``max_bytes`` (0: no limit) it stops at once with INVALID_ARGUMENT ``text: <too_long>``."""
        async def whole():
            yield text

        segments: dict[int, frontend_pb2.Segment] = {}
        parts, summary, size = [], None, 0
        async for resp in self.run(plan, whole(), deadline,
                                   on_segment=lambda seg: segments.__setitem__(seg.index, seg)):
            if resp.WhichOneof("response") == "audio":
                parts.append(resp.audio.audio)
                size += len(resp.audio.audio)
                if max_bytes and size > max_bytes:          # stop now, not after synthesizing all of it
                    raise InvalidArgument("text", too_long)
            else:
                summary = resp.summary
        # the streamed WAV header has unknown length: a complete file (other encodings already are one)
        audio = FILE_ENCODINGS[plan.encoding].complete_file(b"".join(parts), plan.sample_rate)
        return Whole(audio, summary, [segments[i] for i in sorted(segments)])

    @staticmethod
    def _chunk(plan: Plan, data: bytes, offset: int, n: int, index: int, seg, segment_end: bool):
        span = tts_pb2.TextSpan(start=seg.span.start, end=seg.span.end) if seg is not None else None
        return tts_pb2.StreamingSynthesizeResponse(audio=tts_pb2.AudioChunk(
            audio=data, sample_rate=plan.sample_rate, encoding=tts_pb2.AudioEncoding.Value(plan.encoding),
            offset_ms=offset * 1000 / plan.sample_rate, duration_ms=n * 1000 / plan.sample_rate,
            segment_index=index, span=span, segment_text=seg.text if seg is not None else "",
            segment_end=segment_end))

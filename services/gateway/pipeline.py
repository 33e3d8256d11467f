"""The gateway's engine: one utterance through frontend → decoder, all stages running concurrently.

Text pieces flow to the frontend's Normalize stream as they arrive; each segment it emits goes straight to the
decoder's Decode stream; audio chunks come back, are resampled/encoded for the client and sent on. Bounded queues
between the stages give back-pressure; if any part fails, the whole utterance fails at once with that status.

Here: voices and planning, and ``run`` wiring the parts together. The pumps are in ``pumps``, the Decode stream
with its replay and fail-over in ``decoder_call``, the end-of-stream summary in ``summary``, the stubs in ``stages``.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc

from shared.aio import abandon
from shared.encodings import ENCODINGS as FILE_ENCODINGS
from shared.errors import InvalidArgument, TTSError
from shared.speaker_encoders import encoder_id
from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2
from tts.speaker.v1 import speaker_pb2
from tts.v1 import tts_pb2

from .pumps import FLUSH, AudioOut
from .replies import NOTHING_SPEAKABLE, BargeIn, CancelRequest, Reply
from .settings import GatewaySettings
from .stages import Stages, call_stage
from .summary import SummaryBuilder
from .validate import ENCODINGS, check_model
from .voices import VoiceRegistry, is_registered

__all__ = ["FLUSH", "CancelRequest", "Plan", "Pipeline", "Stages", "Whole", "call_stage"]

log = logging.getLogger("gateway")
_warned_aliases: set[str] = set()          # earlier model names already warned about (once per process)

KNOWN_VOICES_SHOWN = 20        # registered voices an unknown-voice answer names (a tenant may have 50)


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
    alignment: bool = False                         # the caller wants per-character alignment on its chunks
    # a registered voice goes to the decoder by reference id only; if that decoder does not hold its prompt
    # (NOT_FOUND), this gives the full conditioning (embedding + prompt audio) to resend with
    full_speaker: Callable[[], Awaitable[decoder_pb2.SpeakerConditioning]] | None = None


@dataclass
class Whole:
    """The result of ``Pipeline.synthesize_whole``."""

    audio: bytes                                    # a complete file in the plan's encoding
    summary: tts_pb2.SynthesisSummary | None
    segments: list                                  # the frontend's segments, in order
    alignment: list = field(default_factory=list)   # tts.v1 CharAlignment (with plan.alignment)
    alignment_estimated: bool = False


class Pipeline:
    def __init__(self, settings: GatewaySettings, stages: Stages, voices: VoiceRegistry):
        self.settings = settings
        self.stages = stages
        self.voices = voices
        self._info: decoder_pb2.InfoResponse | None = None     # the decoders' Info, asked once (engines())
        self._aliases: dict[str, str] = {}        # earlier engine names → the names now (decoders' Info)

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

    async def engines(self) -> dict[str, decoder_pb2.EngineInfo]:
        """What the decoders serve, by engine name (their ``Info``, asked once; raises while no decoder answers)."""
        if self._info is None:
            info = await call_stage("decoder", self.stages.decoder().Info(decoder_pb2.InfoRequest(), timeout=5))
            self._aliases = {alias: e.name for e in info.engines for alias in e.aliases}
            self._info = info
        return {e.name: e for e in self._info.engines}

    async def builtin_voices(self) -> dict[str, list[str]]:
        return {name: list(e.voices) for name, e in (await self.engines()).items()}

    async def unknown_voice(self, tenant: str, voice: str, field: str) -> InvalidArgument:
        """The answer to a voice that is neither built in nor one of the tenant's registered voices: it names the
        built-in voices and the tenant's own registered voices (id and name; never another tenant's)."""
        try:
            names = sorted({n for engine in (await self.builtin_voices()).values() for n in engine})
            builtin = ", ".join(names) or "none"
        except TTSError:
            builtin = "not known now (no decoder answers)"
        try:
            recs = await self.voices.list(tenant)
            shown = [f"{r.id} ({r.name[:40]})" for r in recs[:KNOWN_VOICES_SHOWN]]
            more = f" and {len(recs) - len(shown)} more (ListVoices)" if len(recs) > len(shown) else ""
            registered = ", ".join(shown) + more if shown else "none"
        except TTSError:
            registered = "not listed now (the durable store is unreachable)"
        return InvalidArgument(field, f"unknown voice {voice[:100]!r}; built-in voices: {builtin}; this tenant's "
                                      f"registered voices: {registered}")

    async def models(self) -> tuple[list[str], str]:
        """The engines the decoders serve (their ``Info``) and the default one ("" = the decoders' default)."""
        engines = await self.engines()
        return list(engines), self._current_name(self.settings.default_model) or self._info.default_engine

    async def route(self, cfg) -> str:
        """The engine for a request that names none: the default (``TTS_GATEWAY_DEFAULT_MODEL``, else the decoders'),
        unless the request's built-in voice is another engine's (``jm_kumo`` → kokoro), or its language is one the
        default does not speak well and another engine does (``language: en`` → an engine whose ``Info.languages``
        has "en"). "" while no decoder answers (the decoder's default then)."""
        try:
            engines = await self.engines()
        except TTSError:
            return self._current_name(self.settings.default_model)
        default = self._current_name(self.settings.default_model) or self._info.default_engine
        if cfg.WhichOneof("voice_source") == "voice" and cfg.voice:
            owners = [name for name, e in engines.items() if cfg.voice in e.voices]
            if owners and default not in owners:
                return owners[0]
        lang = cfg.language
        if lang in ("zh", "en") and default in engines and lang not in engines[default].languages:
            speakers = [name for name, e in engines.items() if lang in e.languages]
            if speakers:
                return speakers[0]
        return default

    async def check_model(self, model: str) -> str:
        """``config.model`` is one the decoders serve (INVALID_ARGUMENT naming them); unchecked while no decoder
        answers ``Info`` (the decoder refuses an unknown engine itself). Returns the engine's name: an earlier name
        the decoders list in ``EngineInfo.aliases`` is accepted for one release (warned once) as the name now."""
        try:
            known, _ = await self.models()
        except TTSError:
            return model
        if model in self._aliases:
            return self._current_name(model)
        check_model(model, known)
        return model

    def _current_name(self, model: str) -> str:
        """An earlier engine name → the name now (warned once per process); any other name as it is."""
        name = self._aliases.get(model, model)
        if name != model and model not in _warned_aliases:
            _warned_aliases.add(model)
            log.warning("model %r is deprecated: it is now %r (the old name is accepted for one release)", model, name)
        return name

    async def _engine_info(self, engine: str) -> decoder_pb2.EngineInfo | None:
        """``engine``'s Info (""= the decoders' default); None while no decoder answers or for an unknown name."""
        try:
            engines = await self.engines()
        except TTSError:
            return None
        return engines.get(engine or self._info.default_engine)

    async def speaker_encoder(self, engine: str) -> str:
        """The speaker encoder id the decoder's ``engine`` needs ("" = any, the speaker stage's default; also while
        no decoder answers Info: the decoder checks it)."""
        info = await self._engine_info(engine)
        return info.speaker_encoder if info is not None else ""

    async def segment_units(self, engine: str) -> tuple[int, int]:
        """(min, max) units the decoder's ``engine`` wants per segment ((0, 0) = as the frontend cuts them)."""
        info = await self._engine_info(engine)
        return (info.segment_min_units, info.segment_max_units) if info is not None else (0, 0)

    async def prompt_segments(self, prompt_text: str, metadata, timeout) -> list:
        """The prompt transcript through the frontend (numbers, codes, readings: what the prompt audio says), for an
        engine whose LM reads it; [] when there is none."""
        if not prompt_text.strip():
            return []
        resp = await call_stage("frontend", self.stages.frontend.Analyze(
            frontend_pb2.AnalyzeRequest(text=prompt_text), metadata=metadata, timeout=timeout))
        return list(resp.segments)

    # ---- planning ----------------------------------------------------------------------------------------------
    async def plan(self, tenant: str, cfg, metadata: tuple, deadline: float | None, *, offline: bool = False,
                   batch: bool = False) -> Plan:
        """``offline``: the caller wants the whole audio at once (unary Synthesize, batch lines), so the decoder may
        render each segment in one piece (glmtts: the full-attention flow of the published offline inference).
        ``batch``: offline work that waits for capacity and uses only what live streams leave (batch lines)."""
        model = await self.check_model(cfg.model)
        request_id = dict(metadata).get("x-request-id") or uuid.uuid4().hex[:16]
        metadata = (*[(k, v) for k, v in metadata if k not in ("x-request-id", "x-tenant")],
                    ("x-request-id", request_id), ("x-tenant", tenant))
        timeout = max(deadline - time.time(), 0.001) if deadline else 30.0
        # a live stream always asks the decoder for alignment: a Cancel's answer (what the caller heard) needs it
        dcfg = decoder_pb2.DecodeConfig(chunk_size=cfg.chunk_size, speed=cfg.speed, request_id=request_id,
                                        offline=offline, tenant=tenant,
                                        alignment=(cfg.alignment and not batch) or not offline,
                                        priority=decoder_pb2.BATCH if batch else decoder_pb2.LIVE)
        if cfg.HasField("seed"):
            dcfg.seed = cfg.seed
        if cfg.HasField("use_cache"):
            dcfg.use_cache = cfg.use_cache
        source = cfg.WhichOneof("voice_source")
        cloned = source == "reference_audio" or source == "voice" and is_registered(cfg.voice, "config.voice")
        engine = model or ("" if cloned else await self.route(cfg))
        voice_label = ""
        full_speaker = None
        if cloned and source == "voice":
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
            encoding=ENCODINGS[cfg.encoding], metadata=metadata, alignment=cfg.alignment and not batch)

    # ---- running -----------------------------------------------------------------------------------------------
    def _timeout(self, deadline: float | None):
        def timeout() -> float:
            return max(deadline - time.time(), 0.001) if deadline else self.settings.max_stream_seconds
        return timeout

    async def run(self, plan: Plan, pieces, deadline: float | None, on_segment=None):
        """One utterance, never cancelled (unary, batch lines). ``pieces``: async iterator of str (text) or FLUSH.
        Yields tts.v1 StreamingSynthesizeResponse. ``on_segment(segment)``, if given, sees each frontend segment
        (normalized text, words) as it arrives."""
        summary = SummaryBuilder(plan, time.perf_counter())
        reply = Reply(self.stages, plan, self.settings, self._timeout(deadline), summary, on_segment=on_segment)
        feeder = None
        try:
            await reply.decoder.admit()  # a caller no decoder would admit now is refused at once, not at its 1st cut
            reply.start()
            feeder = asyncio.get_running_loop().create_task(_feed(pieces, reply))
            out = AudioOut(plan)
            async for resp in reply.responses(feeder):
                if resp.WhichOneof("response") == "summary":
                    summary.decoder = resp.summary
                    continue
                sent, n = out.chunk(resp.chunk, reply)
                if sent is not None:
                    summary.audio_sent(n)
                    yield sent
            await feeder
            if not reply.segments:
                raise InvalidArgument("text", NOTHING_SPEAKABLE)
            tail = out.tail()
            if tail is not None:
                yield tail
            if out.samples == 0:
                raise InvalidArgument("text", NOTHING_SPEAKABLE)
            yield tts_pb2.StreamingSynthesizeResponse(summary=summary.build(out.samples, len(reply.segments)))
        finally:
            reply.close()
            abandon(feeder)     # its error, if any, was raised above already (or the call was cancelled)

    async def stream(self, plan: Plan, messages, deadline: float | None):
        """A StreamingSynthesize stream: ``messages`` (str, FLUSH, ``CancelRequest``) → responses; a Cancel cuts the
        current reply and the stream goes on (``replies.BargeIn``)."""
        summary = SummaryBuilder(plan, time.perf_counter())
        async for resp in BargeIn(self.stages, plan, self.settings, self._timeout(deadline), summary,
                                  messages).run():
            yield resp

    async def synthesize_whole(self, plan: Plan, text: str, deadline: float | None, *, max_bytes: int = 0,
                               too_long: str = "") -> Whole:
        """One text, all its audio at once (unary Synthesize, a batch line): a complete file in the plan's encoding.
        Over ``max_bytes`` (0: no limit) it stops at once with INVALID_ARGUMENT ``text: <too_long>``."""
        async def whole():
            yield text

        segments: dict[int, frontend_pb2.Segment] = {}
        parts, summary, size, alignment, estimated = [], None, 0, [], False
        async for resp in self.run(plan, whole(), deadline,
                                   on_segment=lambda seg: segments.__setitem__(seg.index, seg)):
            if resp.WhichOneof("response") == "audio":
                parts.append(resp.audio.audio)
                alignment += resp.audio.alignment
                estimated |= resp.audio.alignment_estimated
                size += len(resp.audio.audio)
                if max_bytes and size > max_bytes:          # stop now, not after synthesizing all of it
                    raise InvalidArgument("text", too_long)
            else:
                summary = resp.summary
        # the streamed WAV header has unknown length: a complete file (other encodings already are one)
        audio = FILE_ENCODINGS[plan.encoding].complete_file(b"".join(parts), plan.sample_rate)
        return Whole(audio, summary, [segments[i] for i in sorted(segments)], alignment, estimated)


async def _feed(pieces, reply: Reply) -> None:
    async for piece in pieces:
        await reply.put(piece)
    await reply.end_text()

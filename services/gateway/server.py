"""Gateway servicer: the public tts.v1 API. Thin: auth, validation, proto ⇄ pipeline."""
from __future__ import annotations

import asyncio
import logging
import time


from shared.errors import InvalidArgument, PermissionDenied
from shared.limits import LANGUAGES
from shared.logging import tenant_var
from shared.speaker_encoders import encoder_id
from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2
from tts.v1 import tts_pb2, tts_pb2_grpc

from .auth import Authenticator
from .limits import TenantLimits
from .metrics import IN_PROGRESS, SYNTHESES
from .pipeline import FLUSH, CancelRequest, Pipeline, call_stage
from .quotas import StoreUnavailable
from .readings import segment_reading, word_reading
from .settings import GatewaySettings
from .validate import SSML_TAIL, check_ssml, check_text, has_speakable, validate_config
from .voices import check_voice_id

log = logging.getLogger("gateway")

# a lower bound of speech per letter/digit/character (fast English at speed 1 is ~0.06 s a letter): the unary audio
# of a text surely over the response size limit is refused before any work
MIN_SECONDS_PER_CHAR = 0.04


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return time.time() + remaining if remaining is not None else None


def segment_to_public(seg) -> tts_pb2.TextSegment:
    return tts_pb2.TextSegment(
        index=seg.index, text=seg.text, normalized=seg.normalized,
        span=tts_pb2.TextSpan(start=seg.span.start, end=seg.span.end), phonemes=segment_reading(seg),
        words=[tts_pb2.Word(text=w.text, lang=w.lang, pinyin=list(w.pinyin), phonemes=word_reading(w),
                            span=tts_pb2.TextSpan(start=w.span.start, end=w.span.end)) for w in seg.words],
        languages=[tts_pb2.LanguageSpan(lang=l.lang, span=tts_pb2.TextSpan(start=l.span.start, end=l.span.end))
                   for l in seg.languages])


class GatewayServicer(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(self, settings: GatewaySettings, pipeline: Pipeline, auth: Authenticator,
                 limits: TenantLimits | None = None, batches=None):
        self.settings = settings
        self.pipeline = pipeline
        self.auth = auth
        self.limits = limits or TenantLimits(settings.limits)   # per-tenant rate + concurrent streams
        self.batches = batches                      # batch.BatchManager (None: the batch RPCs raise FAILED_PRECONDITION)

    def _tenant(self, context) -> tuple[str, tuple]:
        metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str))
        tenant = self.auth.tenant(dict(metadata), context.peer() or "")
        self.limits.check_rate(tenant)              # every RPC takes a token from the tenant's bucket
        tenant_var.set(tenant)
        forwarded = tuple((k, v) for k, v in metadata if k == "x-request-id")
        return tenant, forwarded

    def _admin(self, context) -> tuple[str, tuple]:
        """Admin RPCs act on every tenant: allowed with auth off, else only to TTS_GATEWAY_ADMIN_TENANTS."""
        tenant, metadata = self._tenant(context)
        if not self.auth.is_admin(tenant):
            raise PermissionDenied("admin RPC: this tenant is not in TTS_GATEWAY_ADMIN_TENANTS")
        return tenant, metadata

    async def _pieces(self, requests):
        """Client messages after the config → text pieces and FLUSH, validated as they arrive."""
        total, speakable, tail = 0, False, ""
        while True:
            try:
                req = await asyncio.wait_for(requests.__anext__(), self.settings.stream_idle_timeout_s)
            except StopAsyncIteration:
                if not speakable:
                    raise InvalidArgument("text", "the stream ended without any text to speak") from None
                return
            except asyncio.TimeoutError:
                raise InvalidArgument("text", f"no message for {self.settings.stream_idle_timeout_s:.0f} s; "
                                      "half-close the stream when the text is complete") from None
            kind = req.WhichOneof("request")
            if kind == "config":
                raise InvalidArgument("config", "config may only be sent once, as the first message")
            if kind == "flush":
                yield FLUSH
            elif kind == "cancel":
                yield CancelRequest(req.cancel.played_ms)     # checked against the stream's state when applied
            elif kind == "text":
                total += len(req.text)
                check_text(req.text, total, self.settings.max_text_chars)
                check_ssml(tail + req.text, total - len(req.text) - len(tail))
                tail = (tail + req.text)[-SSML_TAIL:]
                speakable = speakable or has_speakable(req.text)
                if req.text:
                    yield req.text
            else:
                raise InvalidArgument("request", "empty message: set config, text, flush or cancel")

    async def StreamingSynthesize(self, request_iterator, context):
        tenant, metadata = self._tenant(context)
        async with self.limits.stream(tenant):      # one concurrent slot, released in finally
            requests = request_iterator.__aiter__()
            try:
                first = await asyncio.wait_for(requests.__anext__(), self.settings.stream_idle_timeout_s)
            except StopAsyncIteration:
                raise InvalidArgument("config", "the stream ended before a config was sent") from None
            except asyncio.TimeoutError:
                raise InvalidArgument("config", "no config received") from None
            if first.WhichOneof("request") == "cancel":
                raise InvalidArgument("cancel", "sent before the config: nothing is being spoken yet (the first "
                                      "message must be config)")
            if first.WhichOneof("request") != "config":
                raise InvalidArgument("config", "the first message must be config (then text pieces and flushes)")
            validate_config(first.config, self.settings.default_sample_rate, self.settings.max_reference_bytes)
            deadline = _deadline(context)
            plan = await self.pipeline.plan(tenant, first.config, metadata, deadline)
            outcome = "error"
            IN_PROGRESS.labels("StreamingSynthesize").inc()
            try:
                async for resp in self.pipeline.stream(plan, self._pieces(requests), deadline):
                    yield resp
                outcome = "ok"
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            finally:
                SYNTHESES.labels("StreamingSynthesize", outcome).inc()
                IN_PROGRESS.labels("StreamingSynthesize").dec()

    async def Synthesize(self, request, context):
        tenant, metadata = self._tenant(context)
        async with self.limits.stream(tenant):      # one concurrent slot, released in finally
            cfg = request.config
            validate_config(cfg, self.settings.default_sample_rate, self.settings.max_reference_bytes)
            check_text(request.text, len(request.text), self.settings.max_text_chars)
            check_ssml(request.text)
            if not request.text.strip():
                raise InvalidArgument("text", "is empty")
            if not has_speakable(request.text):
                raise InvalidArgument("text", "has nothing to speak (only punctuation, symbols or spaces)")
            limit = self.settings.max_message_mb * 1024 * 1024 - 64 * 1024     # room for the summary
            bytes_per_s = (cfg.sample_rate or self.settings.default_sample_rate) * (
                1 if cfg.encoding == tts_pb2.MULAW else 2)
            speakable = sum(1 for c in request.text if c.isalnum())
            if speakable * MIN_SECONDS_PER_CHAR / (cfg.speed or 1.0) * bytes_per_s > limit:
                raise InvalidArgument("text", f"the audio of {speakable} characters would not fit in one response "
                                      f"({self.settings.max_message_mb} MB); use StreamingSynthesize for long texts")
            deadline = _deadline(context)
            plan = await self.pipeline.plan(tenant, cfg, metadata, deadline, offline=True)
            whole = await self.pipeline.synthesize_whole(
                plan, request.text, deadline, max_bytes=limit,
                too_long=f"the audio is over the {self.settings.max_message_mb} MB response limit; use "
                         "StreamingSynthesize for long texts")
            SYNTHESES.labels("Synthesize", "ok").inc()
            return tts_pb2.SynthesizeResponse(audio=whole.audio, sample_rate=plan.sample_rate,
                                              encoding=tts_pb2.AudioEncoding.Value(plan.encoding),
                                              summary=whole.summary, alignment=whole.alignment,
                                              alignment_estimated=whole.alignment_estimated)

    async def ListVoices(self, request, context):
        tenant, _ = self._tenant(context)
        voices = []
        models, default_model = await self.pipeline.models()
        engines = await self.pipeline.engines()
        for engine, info in engines.items():
            # each voice with what its engine speaks well and the terms of its weights (where a user picks a voice)
            voices += [tts_pb2.Voice(id=n, name=n, builtin=True, engine=engine, language=",".join(info.languages),
                                     license=info.license) for n in info.voices]
        cloning = engines.get(self.settings.cloning_model)
        try:
            registered, missing = await self.pipeline.voices.list(tenant), ""
        except StoreUnavailable as exc:         # the built-in voices still answer; the caller is told what is missing
            registered, missing = [], f"registered voices are not listed: {exc.message}"
        for rec in registered:
            voices.append(tts_pb2.Voice(id=rec.id, name=rec.name, builtin=False, engine=self.settings.cloning_model,
                                        prompt_text=rec.prompt_text, reference_seconds=rec.seconds,
                                        created_at=rec.created_at,
                                        language=",".join(cloning.languages) if cloning is not None else "",
                                        license=cloning.license if cloning is not None else ""))
        return tts_pb2.ListVoicesResponse(voices=voices, models=models, default_model=default_model,
                                          registered_voices_error=missing)

    async def RegisterVoice(self, request, context):
        tenant, metadata = self._tenant(context)
        if not request.name.strip() or len(request.name) > 100:
            raise InvalidArgument("name", "must be 1..100 characters")
        if not request.audio:
            raise InvalidArgument("audio", "is empty")
        if len(request.audio) > self.settings.max_reference_bytes:
            raise InvalidArgument("audio", f"over the {self.settings.max_reference_bytes} byte limit")
        emb = await self.pipeline.embed(request.audio, metadata, context.time_remaining())
        # the full encoder id (name@version): a decoder can tell an embedding from another version of the encoder
        rec = await self.pipeline.voices.add(tenant, request.name.strip(), emb.reference_id,
                                             encoder_id(emb.encoder, emb.encoder_version),
                                             request.prompt_text, emb.speech_seconds, emb.prompt_pcm16k)
        log.info("voice registered", extra={"voice_id": rec.id, "seconds": rec.seconds})
        return tts_pb2.RegisterVoiceResponse(
            voice=tts_pb2.Voice(id=rec.id, name=rec.name, builtin=False, engine=self.settings.cloning_model,
                                prompt_text=rec.prompt_text, reference_seconds=rec.seconds, created_at=rec.created_at),
            warnings=list(emb.warnings))

    async def DeleteVoice(self, request, context):
        tenant, _ = self._tenant(context)
        await self.pipeline.voices.delete(tenant, check_voice_id(request.id, "id"))
        return tts_pb2.DeleteVoiceResponse()

    async def AnalyzeText(self, request, context):
        self._tenant(context)
        check_text(request.text, len(request.text), self.settings.max_text_chars)
        check_ssml(request.text)
        if request.language not in LANGUAGES:
            raise InvalidArgument("language", f"unknown language {request.language!r}")
        resp = await call_stage("frontend", self.pipeline.stages.frontend.Analyze(
            frontend_pb2.AnalyzeRequest(text=request.text, config=frontend_pb2.NormalizeConfig(
                language=request.language, phoneme_mode=request.phoneme_mode)), timeout=context.time_remaining()))
        return tts_pb2.AnalyzeTextResponse(segments=[segment_to_public(s) for s in resp.segments])

    async def ReloadDictionary(self, request, context):
        _, metadata = self._admin(context)
        req = frontend_pb2.ReloadDictionaryRequest()
        if request.HasField("content"):
            req.content = request.content
        resp = await call_stage("frontend", self.pipeline.stages.frontend.ReloadDictionary(
            req, metadata=metadata, timeout=context.time_remaining()))
        log.info("replace dictionary reloaded", extra={"entries": resp.entries, "written": request.HasField("content")})
        return tts_pb2.ReloadDictionaryResponse(
            entries=resp.entries, content=resp.content,
            errors=[tts_pb2.DictionaryError(line=e.line, message=e.message) for e in resp.errors])

    async def ClearCache(self, request, context):
        _, metadata = self._admin(context)
        results = await asyncio.gather(*(call_stage("decoder", stub.ClearCache(
            decoder_pb2.ClearCacheRequest(), metadata=metadata, timeout=context.time_remaining()))
            for stub in self.pipeline.stages.decoders))
        out = tts_pb2.ClearCacheResponse(decoders=len(results))
        for r in results:
            out.freed_bytes += r.freed_bytes
            out.freed_streams += r.freed_streams
        log.info("decoder caches cleared", extra={"freed_bytes": out.freed_bytes, "decoders": out.decoders})
        return out

    # ---- batch jobs (services/gateway/batch/) ----
    def _batches(self, context):
        tenant, _ = self._tenant(context)
        if self.batches is None:
            from shared.errors import FailedPrecondition
            raise FailedPrecondition("batch jobs are not enabled on this gateway")
        return tenant, self.batches

    async def SubmitBatch(self, request, context):
        tenant, batches = self._batches(context)
        return await batches.submit(tenant, request)

    async def GetBatch(self, request, context):
        tenant, batches = self._batches(context)
        return await batches.get(tenant, request.id, request.include_lines)

    async def WatchBatch(self, request, context):
        tenant, batches = self._batches(context)
        async with self.limits.stream(tenant):      # a watch is a stream: it counts against the tenant's limit
            async for event in batches.watch(tenant, request.id):
                yield event

    async def DeleteBatch(self, request, context):
        tenant, batches = self._batches(context)
        return await batches.delete(tenant, request.id)

    async def CancelBatch(self, request, context):
        tenant, batches = self._batches(context)
        return await batches.cancel(tenant, request.id)

    async def ListBatches(self, request, context):
        tenant, batches = self._batches(context)
        return tts_pb2.ListBatchesResponse(jobs=await batches.list(tenant, request.limit))

    async def GetBatchResult(self, request, context):
        tenant, batches = self._batches(context)
        return await batches.result(tenant, request.id, request.uttid)

    async def DownloadBatch(self, request, context):
        tenant, batches = self._batches(context)
        async for item in batches.download(tenant, request.id, request.uttids):
            yield item

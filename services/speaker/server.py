"""Speaker servicer: reference audio → embedding (thin; the logic is in engine/)."""
from __future__ import annotations

import time

from shared.errors import InvalidArgument
from tts.speaker.v1 import speaker_pb2, speaker_pb2_grpc

from .engine import Embedding, SpeakerEngine
from .metrics import CACHE, EMBED_SECONDS


def to_proto(e: Embedding) -> speaker_pb2.EmbedResponse:
    return speaker_pb2.EmbedResponse(
        reference_id=e.reference_id, encoder=e.encoder, encoder_version=e.version, embedding=e.embedding.tolist(),
        speech_seconds=e.seconds, cache_hit=e.cache_hit, warnings=e.warnings,
        prompt_pcm16k=e.pcm16.astype("<i2").tobytes(), prompt_pcm24k=e.pcm24k.astype("<i2").tobytes())


class SpeakerServicer(speaker_pb2_grpc.SpeakerServicer):
    def __init__(self, engine: SpeakerEngine):
        self.engine = engine

    def _check_encoder(self, name: str) -> None:
        self.engine.pick(name)                  # INVALID_ARGUMENT naming the encoders it runs

    async def _embed(self, audio: bytes, encoder: str = "") -> speaker_pb2.EmbedResponse:
        t0 = time.perf_counter()
        result = await self.engine.embed(audio, encoder)
        CACHE.labels("hit" if result.cache_hit else "miss").inc()
        EMBED_SECONDS.labels("hit" if result.cache_hit else "miss").observe(time.perf_counter() - t0)
        return to_proto(result)

    async def Embed(self, request, context):
        self._check_encoder(request.encoder)
        if not request.audio:
            raise InvalidArgument("audio", "is empty")
        return await self._embed(request.audio, request.encoder)

    async def GetEmbedding(self, request, context):
        return to_proto(await self.engine.get(request.reference_id, request.encoder))

    async def Info(self, request, context):
        e = self.engine
        return speaker_pb2.InfoResponse(
            encoders=[speaker_pb2.EncoderInfo(name=enc.name, version=enc.version, dim=enc.dim,
                                              loaded=enc.model is not None) for enc in e.encoders],
            default_encoder=e.encoder.name,
            cache=speaker_pb2.CacheStats(hits=e.hits, misses=e.misses, redis_up=e.cache.store_up,
                                         local_entries=len(e.cache.local), computations=e.computations))

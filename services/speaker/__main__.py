"""``python -m services.speaker``: the speaker stage."""
from __future__ import annotations

import asyncio

import torch

from shared.serve import serve
from tts.speaker.v1 import speaker_pb2, speaker_pb2_grpc

from .engine import SpeakerEngine
from .engine.cache import EmbeddingCache
from .engine.store import open_store
from .engine.campplus import CamppEncoder
from .metrics import CACHE
from .server import SpeakerServicer
from .settings import SpeakerSettings


def main() -> None:
    settings = SpeakerSettings()
    onnx = None
    if settings.campplus_onnx_path or settings.encoder == "campplus-onnx":
        from .engine.campplus_onnx import CamppOnnxEncoder

        onnx = CamppOnnxEncoder(settings.campplus_onnx_path)
    if settings.encoder == "campplus-onnx":
        encoder = onnx
    elif settings.encoder == "campplus":
        encoder = CamppEncoder(settings.campplus_path)
    elif settings.encoder == "ecapa":
        from .engine.ecapa import EcapaEncoder

        encoder = EcapaEncoder(settings.ecapa_source)
    else:
        raise SystemExit(f"TTS_SPEAKER_ENCODER={settings.encoder!r}: use 'campplus', 'campplus-onnx' or 'ecapa'")
    torch.set_num_threads(settings.torch_threads)

    try:
        store = open_store(settings.redis_url, settings.redis_timeout_ms)
    except ValueError as exc:
        raise SystemExit(f"TTS_SPEAKER_REDIS_URL: {exc}") from None

    async def run():
        cache = EmbeddingCache(store, settings.cache_ttl_s,
                               settings.redis_timeout_ms, settings.local_cache_entries,
                               on_result=lambda r: CACHE.labels(r).inc())
        engine = SpeakerEngine(encoder, cache, settings.max_audio_bytes, extra_encoders=[onnx] if onnx else [],
                               max_decoded_bytes=settings.max_decoded_bytes,
                               decode_concurrency=settings.decode_concurrency)

        def register(server):
            speaker_pb2_grpc.add_SpeakerServicer_to_server(SpeakerServicer(engine), server)
            return [speaker_pb2.DESCRIPTOR.services_by_name["Speaker"].full_name]

        await serve("speaker", settings, register, warmup=engine.warmup, shutdown=cache.close)

    asyncio.run(run())


if __name__ == "__main__":
    main()

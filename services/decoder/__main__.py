"""``python -m services.decoder``: the decoder stage."""
from __future__ import annotations

import asyncio

from shared.serve import serve
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc

from .server import DecoderServicer
from .settings import DecoderSettings


def build_engines(settings: DecoderSettings) -> dict:
    engines = {}
    for name in settings.engine_names():
        if name == "embedded":
            from .engine.embedded import EmbeddedEngine

            engines[name] = EmbeddedEngine(settings.embedded_model_dir, default_voice=settings.embedded_voice,
                                           max_streams=settings.embedded_max_streams,
                                           chunk_ms=settings.embedded_chunk_ms,
                                           queue_chunks=settings.embedded_queue_chunks,
                                           target_utilization=settings.embedded_target_utilization,
                                           min_streams=settings.embedded_min_streams,
                                           admission_idle_s=settings.embedded_admission_idle_s)
        elif name == "glmtts":
            from .engine.glmtts.engine import GLMTTSEngine
            from .engine.glmtts.lm import SamplingParams

            try:
                schedule = tuple(int(x) for x in settings.glmtts_chunk_schedule.split(",") if x.strip())
            except ValueError:
                schedule = ()
            if not schedule or min(schedule) <= 0:
                raise SystemExit(f"TTS_DECODER_GLMTTS_CHUNK_SCHEDULE={settings.glmtts_chunk_schedule!r}: "
                                 "expected positive token counts such as 15,25,50")
            try:
                lookahead = tuple(int(x) for x in settings.glmtts_lookahead.split(",") if x.strip()) or (0,)
            except ValueError:
                lookahead = (-1,)
            if min(lookahead) < 0:
                raise SystemExit(f"TTS_DECODER_GLMTTS_LOOKAHEAD={settings.glmtts_lookahead!r}: expected token "
                                 "counts >= 0 such as 12,25,50")
            from .engine.glmtts.engine import DTYPES

            if settings.dtype not in ("auto", *DTYPES):
                raise SystemExit(f"TTS_DECODER_DTYPE={settings.dtype!r}: use auto, {', '.join(DTYPES)}")
            if settings.glmtts_phonemes not in ("official", "polyphones", "off"):
                raise SystemExit(f"TTS_DECODER_GLMTTS_PHONEMES={settings.glmtts_phonemes!r}: use official (alias polyphones) or off")
            engines[name] = GLMTTSEngine(
                settings.glmtts_path, device=settings.device, max_streams=settings.max_streams,
                max_tokens_per_stream=settings.max_tokens_per_stream, cache_budget_bytes=settings.cache_budget_bytes,
                idle_ttl_s=settings.idle_ttl_s, chunk_schedule=schedule, n_timesteps=settings.glmtts_n_timesteps,
                sampling=SamplingParams(top_k=settings.glmtts_top_k, top_p=settings.glmtts_top_p,
                                        temperature=settings.glmtts_temperature),
                min_token_ratio=settings.glmtts_min_token_ratio, max_token_ratio=settings.glmtts_max_token_ratio,
                max_ahead=settings.glmtts_max_ahead, trust_remote_code=settings.glmtts_trust_remote_code,
                lookahead=lookahead, threads=settings.glmtts_threads,
                phonemes=settings.glmtts_phonemes, speaker_encoder=settings.glmtts_speaker_encoder,
                dtype=settings.dtype)
        else:
            raise SystemExit(f"TTS_DECODER_ENGINES: unknown engine {name!r} (known: embedded, glmtts)")
    if settings.default_engine not in engines:
        raise SystemExit(f"TTS_DECODER_DEFAULT_ENGINE={settings.default_engine!r} is not among TTS_DECODER_ENGINES")
    return engines


def hooks(settings: DecoderSettings, engines: dict) -> dict:
    """The keyword arguments of ``serve()`` for these engines (also used by tests that serve in process)."""
    servicer = DecoderServicer(engines, settings.default_engine, settings.stream_idle_timeout_s)

    def register(server):
        decoder_pb2_grpc.add_DecoderServicer_to_server(servicer, server)
        return [decoder_pb2.DESCRIPTOR.services_by_name["Decoder"].full_name]

    async def warmup():
        for engine in engines.values():
            await engine.warmup()

    def watch(out_of_service):
        for engine in engines.values():
            if hasattr(engine, "watch"):     # engines with worker threads report when one dies
                engine.watch(out_of_service)

    async def shutdown():
        for engine in engines.values():
            await engine.close()

    return dict(register=register, warmup=warmup, shutdown=shutdown, watch=watch)


def main() -> None:
    settings = DecoderSettings()
    asyncio.run(serve("decoder", settings, **hooks(settings, build_engines(settings))))


if __name__ == "__main__":
    main()

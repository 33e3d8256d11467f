"""``python -m services.decoder``: the decoder stage."""
from __future__ import annotations

import asyncio

from pydantic import ValidationError

from shared.serve import serve
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc

from .engine.registry import build_engines
from .server import DecoderServicer
from .settings import DecoderSettings


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
        for engine in engines.values():      # engines with worker threads report when one dies
            engine.watch(out_of_service)

    async def shutdown():
        for engine in engines.values():
            await engine.close()

    return dict(register=register, warmup=warmup, shutdown=shutdown, watch=watch)


def main() -> None:
    try:
        settings = DecoderSettings()
    except ValidationError as exc:
        raise SystemExit(f"decoder settings: {exc}") from None
    asyncio.run(serve("decoder", settings, **hooks(settings, build_engines(settings))))


if __name__ == "__main__":
    main()

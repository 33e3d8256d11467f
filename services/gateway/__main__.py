"""``python -m services.gateway``: the public tts.v1 API."""
from __future__ import annotations

import asyncio

import shared  # noqa: F401
from shared.serve import serve
from tts.v1 import tts_pb2, tts_pb2_grpc

from .auth import Authenticator
from .pipeline import Pipeline, Stages
from .server import GatewayServicer
from .settings import GatewaySettings
from .voices import VoiceRegistry


def main() -> None:
    settings = GatewaySettings()
    auth = Authenticator(settings.tokens_file)

    async def run():
        stages = Stages(settings)
        voices = VoiceRegistry(settings.redis_url, settings.redis_timeout_ms)
        servicer = GatewayServicer(settings, Pipeline(settings, stages, voices), auth)

        def register(server):
            tts_pb2_grpc.add_TextToSpeechServicer_to_server(servicer, server)
            return [tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name]

        async def shutdown():
            await stages.close()
            await voices.close()

        await serve("gateway", settings, register, shutdown=shutdown)

    asyncio.run(run())


if __name__ == "__main__":
    main()

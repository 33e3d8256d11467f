"""``python -m services.gateway``: the public tts.v1 API."""
from __future__ import annotations

import asyncio

from shared.serve import serve
from tts.v1 import tts_pb2, tts_pb2_grpc

from .auth import Authenticator
from .batch import BatchManager
from .pipeline import Pipeline, Stages
from .server import GatewayServicer
from .settings import GatewaySettings
from .voices import VoiceRegistry


def main() -> None:
    settings = GatewaySettings()
    auth = Authenticator.from_settings(settings.auth)

    async def run():
        stages = Stages(settings)
        voices = VoiceRegistry(settings.redis_url, settings.redis_timeout_ms, quotas=settings.quotas,
                               max_connections=settings.redis_max_connections)
        pipeline = Pipeline(settings, stages, voices)
        batches = BatchManager(settings, pipeline)      # batch jobs: resumes unfinished ones once serving
        servicer = GatewayServicer(settings, pipeline, auth, batches=batches)

        def register(server):
            tts_pb2_grpc.add_TextToSpeechServicer_to_server(servicer, server)
            return [tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name]

        async def shutdown():
            await batches.close()                       # running lines stop; their leases go to the next gateway
            await stages.close()
            await voices.close()

        await serve("gateway", settings, register, warmup=batches.start, shutdown=shutdown)

    asyncio.run(run())


if __name__ == "__main__":
    main()

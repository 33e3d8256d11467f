"""``python -m services.frontend``: the text frontend stage."""
from __future__ import annotations

import asyncio

from shared.serve import serve

from .dictstore import SharedDictionary
from .server import make_engine, register_with
from .settings import FrontendSettings


def main() -> None:
    settings = FrontendSettings()
    engine = make_engine(settings)

    async def run():
        shared = SharedDictionary(engine, settings.redis_url, settings.dict_check_interval_s) \
            if settings.redis_url else None

        async def warmup():
            if shared is not None:
                await shared.start()        # the stored copy (seeded from the file) before the first request
            await asyncio.to_thread(engine.warmup)

        async def shutdown():
            if shared is not None:
                await shared.close()

        await serve("frontend", settings, register_with(engine, shared), warmup=warmup, shutdown=shutdown)

    asyncio.run(run())


if __name__ == "__main__":
    main()

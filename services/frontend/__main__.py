"""``python -m services.frontend``: the text frontend stage."""
from __future__ import annotations

import asyncio

from shared.serve import serve

from .server import make_engine, register_with
from .settings import FrontendSettings


def main() -> None:
    settings = FrontendSettings()
    engine = make_engine(settings)

    async def warmup():
        await asyncio.to_thread(engine.warmup)

    asyncio.run(serve("frontend", settings, register_with(engine), warmup=warmup))


if __name__ == "__main__":
    main()

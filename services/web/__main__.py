"""``python -m services.web``: the WebUI and the HTTP/JSON API, in front of the gateway (tts.v1 via tts_client)."""
from __future__ import annotations

import logging

from aiohttp import web

from shared.logging import setup_logging
from shared.memory import fixed_mmap_threshold
from shared.metrics import start_metrics_server

from .server import create_app
from .settings import WebSettings


def main() -> None:
    settings = WebSettings()
    # request buffers (partial WebSocket frames, bodies) are given back to the OS when freed, not kept in RSS
    fixed_mmap_threshold()
    setup_logging("web", settings.log_level)
    log = logging.getLogger("web")
    settings.log_once(log)
    app = create_app(settings)
    start_metrics_server(settings.metrics_port, settings.host)
    log.info("listening", extra={"url": f"http://{settings.host}:{settings.port}/"})
    # handler_cancellation: a caller that hangs up cancels its handler at once, and with it the synthesis (the gRPC
    # call to the gateway): a voice agent that interrupts frees its decoder slot now, not at the next audio chunk
    web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=settings.grace_seconds,
                access_log=logging.getLogger("web.access"), print=None,
                access_log_format='%r %s %b %Tfs', handler_cancellation=True)


if __name__ == "__main__":
    main()

"""The web process: the WebUI (static page + a WebSocket that streams audio) and an HTTP/JSON API, OpenAI-compatible
``POST /v1/audio/speech`` included. It speaks to the gateway only through ``tts_client`` (tts.v1 over gRPC); the
gateway authenticates: a caller's ``Authorization: Bearer`` header is passed through, else TTS_WEB_TOKEN is used.

Before any work: the Host header must be an allowed host; a browser's Origin (WebSocket, and every request that
changes state) must be this origin or an allowed one (no cross-site requests or WebSockets); bodies over their limit
are 413 from their Content-Length, before they are read; more than ``preauth_kb`` of a body (or reference audio on
the WebSocket) is read only once the caller's token has been checked with the gateway; JSON bodies need
``Content-Type: application/json`` (415) and big ones are parsed off the event loop. Results are kept per caller
(by a hash of the token) and served only to the same caller.

The parts: ``inputs`` (token, body, fields), ``errors`` (HTTP status and JSON bodies), ``middleware`` (guards, error
mapping), ``webui`` (pages, the page's JSON API, the WebSocket), ``openai_api``, ``batch_api``; here the app is
assembled.
"""
from __future__ import annotations

from aiohttp import web

from tts_client.aio import AsyncTTSClient

from . import batch_api, openai_api, webui
from .errors import HTTP_STATUS
from .inputs import CLIENT, PREAUTH, RESULTS, SETTINGS, STATIC, TOKEN_CACHE, PreauthGate
from .middleware import add_request_id, disconnect_middleware, errors_middleware, guard_middleware, request_id_middleware
from .results import ResultStore
from .settings import WebSettings



def create_app(settings: WebSettings, client: AsyncTTSClient | None = None) -> web.Application:
    app = web.Application(middlewares=[request_id_middleware, disconnect_middleware, errors_middleware,
                                       guard_middleware],
                          client_max_size=max(settings.max_upload_mb * 1024, settings.max_json_kb) * 1024 + 4096)
    app[SETTINGS] = settings
    app[RESULTS] = ResultStore(settings.results_dir, settings.max_results)
    app[TOKEN_CACHE] = {}
    app.on_response_prepare.append(add_request_id)
    app[PREAUTH] = PreauthGate(settings.preauth_connections, settings.preauth_per_client, settings.ws_start_timeout_s)

    async def lifecycle(app):
        app[CLIENT] = client or AsyncTTSClient(settings.gateway_addr, timeout=settings.gateway_timeout_s)
        yield
        await app[CLIENT].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", webui.index)
    app.router.add_get("/healthz", webui.healthz)
    app.router.add_get("/livez", webui.livez)
    app.router.add_get("/api/voices", webui.voices)
    app.router.add_post("/api/analyze", webui.analyze)
    app.router.add_get("/api/dictionary", webui.get_dictionary)
    app.router.add_put("/api/dictionary", webui.put_dictionary)
    app.router.add_post("/api/cache/clear", webui.clear_cache)
    app.router.add_get("/api/synthesize", webui.ws_synthesize)
    app.router.add_get(r"/api/results/{rid:[0-9a-f]{32}}.wav", webui.result_file)
    app.router.add_post("/v1/audio/speech", openai_api.openai_speech)
    app.router.add_get("/batch", batch_api.batch_page)
    app.router.add_post("/api/batches", batch_api.batch_submit)
    app.router.add_get("/api/batches", batch_api.batch_list)
    app.router.add_get("/api/batches/{job}", batch_api.batch_get)
    app.router.add_post("/api/batches/{job}/cancel", batch_api.batch_cancel)
    app.router.add_get("/api/batches/{job}/watch", batch_api.batch_watch)
    app.router.add_get("/api/batches/{job}/download", batch_api.batch_download)
    app.router.add_get("/api/batches/{job}/results/{uttid}.wav", batch_api.batch_result)
    app.router.add_static("/static/", STATIC)
    return app


__all__ = ["create_app", "HTTP_STATUS"]

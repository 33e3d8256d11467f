"""Callers that hang up while their request is served: every interruption of a voice agent that speaks over HTTP
(Pipecat's and LiveKit's OpenAI TTS services close the request mid-body). An ordinary event: logged at INFO with the
request id, no traceback, counted in ``tts_web_client_disconnects_total{route}``; the synthesis is cancelled with the
handler (``disconnect_middleware``)."""
from __future__ import annotations

import logging

from aiohttp import web

from .inputs import LEFT, SENT_BYTES
from .metrics import CLIENT_DISCONNECTS

log = logging.getLogger("web")


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def client_left(request: web.Request) -> None:
    """An ordinary event (every interruption of a voice agent that speaks over HTTP): INFO, no traceback, counted
    once per request; with the audio bytes written before it (``request[SENT_BYTES]``, where a handler counts)."""
    if request.get(LEFT):
        return
    request[LEFT] = True
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    CLIENT_DISCONNECTS.labels(route).inc()
    extra = {"route": route}
    if SENT_BYTES in request:
        extra["sent_bytes"] = request[SENT_BYTES]
    log.info("client disconnected; request cancelled", extra=extra)

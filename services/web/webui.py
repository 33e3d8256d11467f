"""The WebUI's side: the pages, health, the page's JSON API (voices, analysis, dictionary, cache, result files) and
synthesis over a WebSocket (audio streamed as it is made, kept as a result file for its caller)."""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import socket
import time

from aiohttp import WSMsgType, web

from tts_client.aio import TTSError, make_config, to_dict
from tts_client.speech import Audio, Interrupted, Rejected

from .errors import HTTP_STATUS, HTTPError, scrub
from .inputs import (CLIENT, PREAUTH, RESULTS, SETTINGS, STATIC, bearer, get_field, json_body, owner_of,
                     parse_json, request_id, verify_token)

log = logging.getLogger("web")
WS_SEND_BUFFER = 64 * 1024


# ---- pages ------------------------------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def livez(request: web.Request) -> web.Response:
    """The process answers: for liveness probes (a gateway outage must not restart web pods)."""
    return web.json_response({"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    state = await request.app[CLIENT].health()
    ok = state == "SERVING"
    return web.json_response({"status": "ok" if ok else "unavailable", "gateway": state}, status=200 if ok else 503)


# ---- JSON API for the page ----------------------------------------------------------------------------------------------
async def voices(request: web.Request) -> web.Response:
    resp = await request.app[CLIENT].list_voices(token=bearer(request))
    return web.json_response({"voices": [to_dict(v) for v in resp.voices], "models": list(resp.models),
                              "default_model": resp.default_model})


async def analyze(request: web.Request) -> web.Response:
    body = await json_body(request)
    segments = await request.app[CLIENT].analyze(
        get_field(body, "text", str, required=True), get_field(body, "language", str, ""),
        get_field(body, "phoneme_mode", bool, False), token=bearer(request))
    return web.json_response({"segments": [to_dict(s) for s in segments]})


async def get_dictionary(request: web.Request) -> web.Response:
    return web.json_response(to_dict(await request.app[CLIENT].reload_dictionary(token=bearer(request))))


async def put_dictionary(request: web.Request) -> web.Response:
    body = await json_body(request)
    content = get_field(body, "content", str, required=True)
    return web.json_response(to_dict(await request.app[CLIENT].reload_dictionary(content, token=bearer(request))))


async def clear_cache(request: web.Request) -> web.Response:
    return web.json_response(to_dict(await request.app[CLIENT].clear_cache(token=bearer(request))))


async def result_file(request: web.Request) -> web.StreamResponse:
    path = request.app[RESULTS].path(request.match_info["rid"], owner_of(bearer(request)))
    if path is None:
        raise HTTPError(404, "no such result (results are kept for a while, newest first)", "id")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav",
                                           "Content-Disposition": f'attachment; filename="tts-{path.stem[:8]}.wav"'})


# ---- synthesis over a WebSocket (the page) -------------------------------------------------------------------------------
async def decode_b64(value: str, max_bytes: int) -> bytes:
    if len(value) > (max_bytes + 2) // 3 * 4 + 4:
        raise HTTPError(413, f"over the limit of {max_bytes} bytes", "reference_audio")
    try:
        return await asyncio.to_thread(base64.b64decode, value, validate=True)    # off the event loop
    except (binascii.Error, ValueError):
        raise HTTPError(400, "is not valid base64", "reference_audio") from None


def config_from(start: dict, ref: bytes = b""):
    """The page's start message (+ its reference audio) → SynthesisConfig (LINEAR16: the page plays raw PCM)."""
    seed = get_field(start, "seed", int)
    if seed is not None and seed < 0:
        raise HTTPError(400, "must be 0 or more", "seed")
    return make_config(
        voice=get_field(start, "voice", str, ""), reference_audio=ref,
        prompt_text=get_field(start, "prompt_text", str, ""), language=get_field(start, "language", str, ""),
        sample_rate=get_field(start, "sample_rate", int, 0), encoding="linear16",
        chunk_size=get_field(start, "chunk_size", int, 0), seed=seed, speed=get_field(start, "speed", float, 0.0),
        use_cache=get_field(start, "use_cache", bool), phoneme_mode=get_field(start, "phoneme_mode", bool, False),
        model=get_field(start, "model", str, ""), alignment=get_field(start, "alignment", bool, False))


async def ws_synthesize(request: web.Request) -> web.WebSocketResponse:
    """Protocol: the page sends one JSON ``{"type": "start", "text": ..., <config fields>, "token"?,
    "reference_audio_bytes"?}`` (at most ``max_json_kb``), then, if it announced reference audio, that many bytes in
    binary frames (read only after the token was checked with the gateway); the server answers ``{"type": "chunk",
    ...}`` + one binary frame of PCM16 LE per audio chunk, then ``{"type": "done", "summary", "result"}`` or
    ``{"type": "error", "status", "code", "message", "field"}``. ``{"type": "stop"}`` (or closing the socket)
    cancels the synthesis; a reader that takes more than ``ws_send_timeout_s`` for a frame is dropped.

    Barge-in: with ``"barge_in": true`` in the start message the stream stays open after its text: the page sends
    ``{"type": "cancel", "played_ms": N}`` (ms of the stream's audio it played) to cut the reply — answered by
    ``{"type": "interrupted", "heard_text", "unspoken_text", "played_ms", "sent_ms", "reply", ...}`` (or
    ``{"type": "rejected", "field", "message"}`` for a bad one: nothing changed) —, ``{"type": "text", "text"}``
    for more text (after a cancel: the next reply), ``{"type": "flush"}``, and ``{"type": "end"}`` when it has no
    more text (then ``done``). With ``"alignment": true`` each chunk message carries ``alignment``: the characters
    starting in it (``text``, ``start``/``end`` in the stream's text, ``start_ms``/``end_ms`` in its audio,
    ``silent``).

    Before its caller is known (no Authorization header on the upgrade) a connection holds a pre-auth slot
    (``PreauthGate``: a bounded number, per client address too; none free → 429 before the upgrade) until its start
    message is read and, if big, its token checked; a start message not complete within ``ws_start_timeout_s`` (a
    frame stalled part-way) drops the connection at once."""
    slot = None
    if request.headers.get("Authorization"):
        await verify_token(request, bearer(request))     # known before the upgrade: 401 here, no pre-auth slot
    else:
        slot = request.app[PREAUTH].enter(request.remote or "")
    try:
        return await _ws_session(request, slot)
    finally:
        if slot is not None:
            slot.release()


def _drop(request: web.Request) -> None:
    """Close the connection now, without a closing handshake (a client stalled mid-frame would never answer it)."""
    if request.transport is not None:
        request.transport.abort()


async def _ws_session(request: web.Request, slot) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    max_ref = settings.max_upload_mb * 1024 * 1024
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_s, max_msg_size=settings.max_json_kb * 1024)
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        # a small kernel send buffer (audio is ≤ 48 KB/s): a reader that stops reading blocks our sends within
        # seconds, so the send timeout below notices it (the default buffer grows to megabytes: minutes of audio)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SEND_BUFFER)
        except OSError:
            pass
    try:
        msg = await ws.receive(timeout=settings.ws_start_timeout_s)
    except asyncio.TimeoutError:
        log.info("websocket start message not complete in time; dropped",
                 extra={"timeout_s": settings.ws_start_timeout_s})
        _drop(request)
        return ws
    if msg.type != WSMsgType.TEXT:
        if msg.type == WSMsgType.ERROR or ws.close_code == 1009:
            await ws.close(code=1009, message=b"the start message is too big")
        await ws.close()
        return ws
    try:
        start = await parse_json(msg.data, "the start message")
        if not isinstance(start, dict) or start.get("type") != "start":
            raise HTTPError(400, "the first message must be {\"type\": \"start\", ...}")
        text = get_field(start, "text", str, required=True)
        barge_in = get_field(start, "barge_in", bool, False)
        token = bearer(request, get_field(start, "token", str, ""))
        announced = get_field(start, "reference_audio_bytes", int, 0)
        if not 0 <= announced <= max_ref:
            raise HTTPError(413, f"{announced} bytes is over the limit of {max_ref}", "reference_audio")
        b64 = get_field(start, "reference_audio_b64", str, "")
        if announced or len(msg.data) > settings.preauth_kb * 1024:
            await verify_token(request, token)          # before reading (or decoding) anything big
        if slot is not None:
            slot.release()                              # the start message is in: no longer pre-auth
        ref = await decode_b64(b64, max_ref) if b64 else b""
        if announced:
            parts, got = [], 0
            while got < announced:
                m = await ws.receive(timeout=60)
                if m.type != WSMsgType.BINARY:
                    raise HTTPError(400, f"expected {announced} bytes of audio in binary frames, got {got}",
                                    "reference_audio")
                parts.append(m.data)
                got += len(m.data)
            if got != announced:
                raise HTTPError(400, f"{got} bytes sent, {announced} announced", "reference_audio")
            ref = b"".join(parts)
        if len(ref) > max_ref:
            raise HTTPError(413, f"{len(ref)} bytes is over the limit of {max_ref}", "reference_audio")
        cfg = config_from(start, ref)
    except (HTTPError, TTSError, asyncio.TimeoutError, ValueError) as exc:
        if isinstance(exc, TTSError):
            err = {"status": HTTP_STATUS.get(exc.code, 500), "code": exc.code, "field": exc.field,
                   "message": scrub(exc.message)}
        elif isinstance(exc, asyncio.TimeoutError):
            err = {"status": 408, "code": "INVALID_ARGUMENT", "field": "reference_audio",
                   "message": "reference_audio: the announced bytes did not arrive"}
        elif isinstance(exc, ValueError):
            err = {"status": 400, "code": "INVALID_ARGUMENT", "field": "", "message": str(exc)[:200]}
        else:
            err = {"status": exc.status, "code": "INVALID_ARGUMENT" if exc.status < 500 and exc.status != 401
                   else "UNAUTHENTICATED", "field": exc.param,
                   "message": f"{exc.param}: {exc.message}" if exc.param else exc.message}
        if not ws.closed:
            await ws.send_json({"type": "error", **err})
            await ws.close()
        return ws

    writer = request.app[RESULTS].writer(owner_of(token))
    t0 = time.perf_counter()
    send_timeout = settings.ws_send_timeout_s

    async def send(data) -> None:
        # a client that stops reading must not hold its synthesis (and its decoder slot) open: drop it
        if isinstance(data, bytes):
            await asyncio.wait_for(ws.send_bytes(data), send_timeout)
        else:
            await asyncio.wait_for(ws.send_json(data), send_timeout)

    # the request id (the handshake's X-Request-Id) goes to the gateway: the summary the page gets carries it
    pair = asyncio.Lock()
    stream = request.app[CLIENT].open_stream(cfg, token=token, request_id=request_id(request, strict=False))

    async def pump():
        first = None
        await stream.send_text(text)
        await stream.flush()
        if not barge_in:
            await stream.end()
        try:
            async for ev in stream:
                if isinstance(ev, Audio):
                    item = ev.chunk
                    if first is None:
                        first = (time.perf_counter() - t0) * 1000
                    await asyncio.to_thread(writer.write, item.audio, item.sample_rate)
                    async with pair:          # a chunk's JSON and its PCM frame go out together
                        await send({"type": "chunk", "sample_rate": item.sample_rate, "bytes": len(item.audio),
                                    "offset_ms": item.offset_ms, "duration_ms": item.duration_ms,
                                    "segment_index": item.segment_index, "segment_text": item.segment_text,
                                    "segment_end": item.segment_end, "first_chunk_ms": first, "reply": ev.reply,
                                    "span": [item.span.start, item.span.end],
                                    "alignment": [{"text": t.text, "start": t.start, "end": t.end,
                                                   "start_ms": t.start_ms, "end_ms": t.end_ms, "silent": t.silent}
                                                  for t in ev.timings],
                                    "alignment_estimated": ev.estimated})
                        await send(item.audio)
                elif isinstance(ev, Interrupted):
                    async with pair:
                        await send({"type": "interrupted", **to_dict(ev.interruption)})
                elif isinstance(ev, Rejected):
                    async with pair:
                        await send({"type": "rejected", "field": ev.field, "message": scrub(ev.message)})
                else:
                    rid = await asyncio.to_thread(writer.finish)
                    async with pair:
                        await send({"type": "done", "summary": to_dict(ev.summary), "first_chunk_ms": first,
                                    "result": {"id": rid, "url": f"/api/results/{rid}.wav", "bytes": writer.size}})
        finally:
            await stream.aclose()      # a send that timed out leaves the stream suspended: end the call now

    async def listen():
        async for m in ws:            # "stop", or the socket closing, ends the synthesis
            if m.type != WSMsgType.TEXT:
                continue
            try:
                msg = await parse_json(m.data, "the message")
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "stop":
                    return
                if not barge_in and kind in ("cancel", "text", "flush", "end"):
                    raise HTTPError(400, "start the stream with \"barge_in\": true to send more after it", "type")
                if kind == "cancel":
                    played = get_field(msg, "played_ms", float, required=True)
                    await stream.cancel(played)
                elif kind == "text":
                    await stream.send_text(get_field(msg, "text", str, required=True))
                elif kind == "flush":
                    await stream.flush()
                elif kind == "end":
                    await stream.end()
                else:
                    raise HTTPError(400, "unknown message: use cancel, text, flush, end or stop", "type")
            except (HTTPError, ValueError) as exc:     # a bad message is answered; the stream goes on
                field = "cancel.played_ms" if isinstance(exc, ValueError) else exc.param
                if field == "played_ms":
                    field = "cancel.played_ms"
                message = str(exc)[:200] if isinstance(exc, ValueError) else exc.message
                async with pair:
                    await send({"type": "rejected", "field": field, "message": f"{field}: {message}"})

    pumping, listening = asyncio.create_task(pump()), asyncio.create_task(listen())
    try:
        await asyncio.wait({pumping, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not pumping.done():
            pumping.cancel()
        try:
            await pumping
        except asyncio.CancelledError:
            if not ws.closed:
                await ws.send_json({"type": "stopped"})
        except TTSError as exc:
            log.info("synthesis failed", extra={"code": exc.code, "error": exc.message})
            if not ws.closed:
                await ws.send_json({"type": "error", "status": HTTP_STATUS.get(exc.code, 500), "code": exc.code,
                                    "field": exc.field, "message": scrub(exc.message),
                                    "retry_after_s": exc.retry_after_s})
        except asyncio.TimeoutError:
            log.info("websocket reader too slow; synthesis cancelled", extra={"timeout_s": send_timeout})
        except ConnectionError:
            pass
    finally:
        listening.cancel()
        if not pumping.done():        # this handler was cancelled (its caller hung up): the synthesis ends with it
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
        await asyncio.to_thread(writer.discard)
        if not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), send_timeout)      # a stalled reader may never take the close
            except asyncio.TimeoutError:
                pass
    return ws

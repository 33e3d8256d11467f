"""The OpenAI-compatible ``POST /v1/audio/speech``: OpenAI's request fields and names mapped onto tts.v1."""
from __future__ import annotations

import logging

from aiohttp import web

from shared.encodings import ENCODINGS
from tts_client.aio import TTSError, make_config

from .errors import HTTPError
from .hangups import client_gone, client_left
from .inputs import CLIENT, SENT_BYTES, bearer, get_field, json_body, request_id

log = logging.getLogger("web")

# OpenAI's built-in voice names (the SDK's list, openai 3.x: speech_create_params.Voice) mean "the server's default
# voice" here; its model names map to the default engine. Our own voice names and registered ids (v_...) pass through.
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar"}
OPENAI_MODELS = {"", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"}
# OpenAI fields we accept but cannot honour (named in the response's X-TTS-Ignored header when a request sets them):
# ``instructions`` (free-text voice direction for gpt-4o-mini-tts: our engines take no style prompt) and
# ``stream_format: "sse"`` (the audio is sent as bytes of response_format, as OpenAI's "audio"; clients such as
# LiveKit's read the Content-Type, not what they asked for)
STREAM_FORMATS = {"audio", "sse"}
# OpenAI's response_format → the tts.v1 encoding the gateway produces (shared/encodings.py); mp3 is OpenAI's default
OPENAI_FORMATS = {"mp3": "MP3", "opus": "OGG_OPUS", "aac": "AAC", "flac": "FLAC", "wav": "WAV", "pcm": "LINEAR16"}
# the gateway's field names → the OpenAI request's
OPENAI_PARAMS = {"text": "input", "config.voice": "voice", "config.model": "model", "config.speed": "speed",
                 "config.sample_rate": "sample_rate", "config.encoding": "response_format"}


# ---- OpenAI-compatible speech --------------------------------------------------------------------------------------------
async def openai_speech(request: web.Request) -> web.StreamResponse:
    """``POST /v1/audio/speech``: streams the audio (chunked) as it is synthesized, in ``response_format`` (mp3 by
    default; opus = Ogg/Opus, aac = ADTS, flac, pcm = raw PCM16; each streamed chunk is whole frames/pages). ``wav``
    is the exception: a WAV header states the length, so it is sent whole once synthesized (with Content-Length), and
    the file a client saves is right. Errors before the first audio get their HTTP status; an error after it cuts the
    chunked body short (no terminating chunk)."""
    body = await json_body(request)
    text = get_field(body, "input", str, required=True)
    if not text.strip():
        raise HTTPError(400, "is empty", "input")
    model = get_field(body, "model", str, "")
    voice = body.get("voice")
    if isinstance(voice, dict):              # OpenAI's custom voice object {"id": ...}: a registered voice id here
        voice = voice.get("id")
        if not isinstance(voice, str) or not voice:
            raise HTTPError(400, "a voice object needs its \"id\" (a string)", "voice")
    else:
        voice = get_field(body, "voice", str, "")
    ignored = []
    if get_field(body, "instructions", str, ""):
        ignored.append("instructions")
    stream_format = get_field(body, "stream_format", str, "audio")
    if stream_format not in STREAM_FORMATS:
        raise HTTPError(400, f"{stream_format!r} is not supported; use audio", "stream_format")
    if stream_format == "sse":
        ignored.append("stream_format")
    fmt = get_field(body, "response_format", str, "mp3").lower()
    if fmt not in OPENAI_FORMATS:
        raise HTTPError(400, f"{fmt!r} is not supported; use one of {', '.join(OPENAI_FORMATS)}", "response_format")
    encoding = ENCODINGS[OPENAI_FORMATS[fmt]]
    speed = get_field(body, "speed", float, 1.0)
    rate = get_field(body, "sample_rate", int, 24000)      # an extension; OpenAI's pcm is 24 kHz
    cfg = make_config(voice="" if voice in OPENAI_VOICES else voice, model="" if model in OPENAI_MODELS else model,
                      speed=speed, sample_rate=rate, encoding=encoding.name.lower())
    rid = request_id(request)                # a caller's X-Request-Id that is no valid id: 400, before any work
    # the id goes to the gateway: its logs and the summary use it, and the response says it (X-Request-Id)
    events = request.app[CLIENT].stream([text], cfg, token=bearer(request), request_id=rid)
    headers = {"Content-Type": f"audio/pcm;rate={rate};encoding=signed-int;bits=16" if fmt == "pcm" else encoding.mime,
               "X-Sample-Rate": str(rate), "Cache-Control": "no-store"}
    if ignored:
        headers["X-TTS-Ignored"] = ", ".join(ignored)
    request[SENT_BYTES] = 0
    # a caller that hangs up cancels this handler (disconnect_middleware logs it): the finally below ends the gRPC
    # call, so the gateway and decoder stop at once
    try:
        try:
            kind, first = await events.__anext__()   # errors before any audio → a proper HTTP status (middleware)
        except StopAsyncIteration:
            raise HTTPError(502, "the gateway ended the stream without audio") from None
        if fmt == "wav":
            parts = [first.audio] if kind == "audio" else []
            async for kind, item in events:
                if kind == "audio":
                    parts.append(item.audio)
                elif kind == "summary":
                    _done(item)
            return web.Response(body=encoding.complete_file(b"".join(parts), rate), headers=headers)
        resp = web.StreamResponse(status=200, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            if kind == "audio":
                await resp.write(first.audio)
                request[SENT_BYTES] += len(first.audio)
            async for kind, item in events:
                if kind == "audio":
                    await resp.write(item.audio)
                    request[SENT_BYTES] += len(item.audio)
                elif kind == "summary":
                    _done(item)
        except TTSError as exc:
            log.warning("synthesis failed mid-stream; cutting the response short",
                        extra={"code": exc.code, "error": exc.message})
            raise ConnectionAbortedError(exc.message) from None
        except ConnectionResetError:
            # the write noticed the hang-up before aiohttp cancelled us: the same ordinary event
            if not client_gone(request):
                raise
            client_left(request)
            return resp                   # aiohttp's write_eof on the closed connection is ignored
        await resp.write_eof()
        return resp
    finally:
        await events.aclose()


def _done(summary) -> None:
    log.info("speech done", extra={
        "engine": summary.engine, "voice": summary.voice, "audio_ms": round(summary.audio_ms),
        "first_chunk_ms": round(summary.first_chunk_latency_ms), "segments": summary.segments,
        "stalls": summary.stalls, "stall_ms": round(summary.stall_ms),
        "min_playback_margin_ms": round(summary.min_playback_margin_ms), "gateway_request_id": summary.request_id})

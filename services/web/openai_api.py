"""The OpenAI-compatible ``POST /v1/audio/speech``: OpenAI's request fields and names mapped onto tts.v1."""
from __future__ import annotations

import logging

from aiohttp import web

from shared.encodings import ENCODINGS
from tts_client.aio import TTSError, make_config

from .errors import HTTPError
from .inputs import CLIENT, bearer, get_field, json_body, request_id

log = logging.getLogger("web")

# OpenAI's voice names mean "the server's default voice" here; model names map to the default engine
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
OPENAI_MODELS = {"", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"}
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
    voice = get_field(body, "voice", str, "")
    fmt = get_field(body, "response_format", str, "mp3").lower()
    if fmt not in OPENAI_FORMATS:
        raise HTTPError(400, f"{fmt!r} is not supported; use one of {', '.join(OPENAI_FORMATS)}", "response_format")
    encoding = ENCODINGS[OPENAI_FORMATS[fmt]]
    speed = get_field(body, "speed", float, 1.0)
    rate = get_field(body, "sample_rate", int, 24000)      # an extension; OpenAI's pcm is 24 kHz
    cfg = make_config(voice="" if voice in OPENAI_VOICES else voice, model="" if model in OPENAI_MODELS else model,
                      speed=speed, sample_rate=rate, encoding=encoding.name.lower())
    events = request.app[CLIENT].stream([text], cfg, token=bearer(request), request_id=request_id(request))
    try:
        kind, first = await events.__anext__()   # errors before any audio → a proper HTTP status (middleware)
    except StopAsyncIteration:
        raise HTTPError(502, "the gateway ended the stream without audio") from None
    headers = {"Content-Type": f"audio/pcm;rate={rate};encoding=signed-int;bits=16" if fmt == "pcm" else encoding.mime,
               "X-Sample-Rate": str(rate), "Cache-Control": "no-store"}
    if fmt == "wav":
        parts = [first.audio] if kind == "audio" else []
        try:
            async for kind, item in events:
                if kind == "audio":
                    parts.append(item.audio)
        finally:
            await events.aclose()
        return web.Response(body=encoding.complete_file(b"".join(parts), rate), headers=headers)
    resp = web.StreamResponse(status=200, headers=headers)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        if kind == "audio":
            await resp.write(first.audio)
        async for kind, item in events:
            if kind == "audio":
                await resp.write(item.audio)
    except TTSError as exc:
        log.warning("synthesis failed mid-stream; cutting the response short",
                    extra={"code": exc.code, "error": exc.message})
        raise ConnectionAbortedError(exc.message) from None
    finally:
        await events.aclose()
    await resp.write_eof()
    return resp

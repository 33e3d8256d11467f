"""A LiveKit Agents TTS plugin for the tts.v1 streaming API (``pip install streaming-tts[livekit]``; livekit-agents 1.8).

    from tts_client.livekit import TTS
    session = AgentSession(llm=..., stt=..., vad=..., tts=TTS(target="localhost:50051", voice="..."),
                           use_tts_aligned_transcript=True)

- ``TTSCapabilities(streaming=True, aligned_transcript=True)``: the session feeds the LLM's text into one
  ``SynthesizeStream`` per reply (``push_text`` as tokens come, ``end_input`` at the end); each stream is one
  ``StreamingSynthesize`` call on the plugin's gRPC channel (one connection for the whole session).
- Timed transcript: the server's per-character alignment (``config.alignment``) goes out as ``TimedString``s (a
  character, or a stretch read as a whole, with its start and end in seconds of the reply's audio; punctuation
  included, no spaces added), attached to the audio frames, so ``use_tts_aligned_transcript=True`` shows and keeps
  the characters as they are spoken, and an interrupted reply's transcript stops where the audio stopped.
- Interruption: the session cancels the reply's stream (``aclose()``); the plugin cancels the call at once, so the
  server stops synthesizing and the decoder is free for the next reply.
"""
from __future__ import annotations

import asyncio

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    tts,
    utils,
)
from livekit.agents.types import TimedString

from .aio import AsyncTTSClient
from .client import make_config
from .errors import TTSError
from .speech import Audio, AsyncSpeechStream, Done

# gRPC status → the HTTP-like status LiveKit's retry logic reads (4xx: not retried, except 408/409/429)
_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
           "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 429,
           "CANCELLED": 499, "UNIMPLEMENTED": 501}


def _api_error(err: TTSError, request_id: str) -> Exception:
    if err.code == "UNAVAILABLE":
        return APIConnectionError(f"tts.v1 gateway unavailable: {err.message}")
    if err.code == "DEADLINE_EXCEEDED":
        return APITimeoutError(f"tts.v1: {err.message}")
    return APIStatusError(f"tts.v1 {err.code}: {err.message}", status_code=_STATUS.get(err.code, 500),
                          request_id=request_id, body=err.field or None)


class TTS(tts.TTS):
    """LiveKit Agents TTS speaking tts.v1 ``StreamingSynthesize`` to our gateway.

    Args:
        target: the gateway's ``host:port``.
        token: the tenant's bearer token ("" when the gateway does not check).
        voice: a built-in voice name or a registered voice id ("" = the server's default voice).
        model: a decoder engine ("" = the server's default).
        language: "", "zh" or "en": a hint for the text frontend.
        speed: 0 (= 1.0) or 0.5 .. 2.0.
        sample_rate: output rate (8000, 16000, 22050, 24000, 32000, 44100, 48000).
        client: an ``AsyncTTSClient`` to share (its channel); the plugin makes its own otherwise.
    """

    def __init__(self, *, target: str = "localhost:50051", token: str = "", voice: str = "", model: str = "",
                 language: str = "", speed: float = 0.0, sample_rate: int = 24000,
                 client: AsyncTTSClient | None = None, timeout_s: float = 600.0):
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=True),
                         sample_rate=sample_rate, num_channels=1)
        self._own_client = client is None
        self._client = client or AsyncTTSClient(target, token=token, timeout=timeout_s)
        self._voice, self._model, self._language, self._speed = voice, model, language, speed
        self._timeout_s = timeout_s

    @property
    def model(self) -> str:
        return self._model or "default"

    @property
    def provider(self) -> str:
        return "streaming-tts"

    def update_options(self, *, voice: str | None = None, speed: float | None = None) -> None:
        """For the streams opened from now on."""
        if voice is not None:
            self._voice = voice
        if speed is not None:
            self._speed = speed

    def _config(self):
        return make_config(voice=self._voice, model=self._model, language=self._language,
                           sample_rate=self.sample_rate, encoding="linear16", speed=self._speed, alignment=True)

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.ChunkedStream:
        return self._synthesize_with_stream(text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        return SynthesizeStream(tts=self, conn_options=conn_options)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.close()


class SynthesizeStream(tts.SynthesizeStream):
    """One reply: one StreamingSynthesize call, opened at its first text."""

    def __init__(self, *, tts: TTS, conn_options: APIConnectOptions):
        super().__init__(tts=tts, conn_options=conn_options)
        self._plugin = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        request_id = utils.shortuuid()
        output_emitter.initialize(request_id=request_id, sample_rate=self._plugin.sample_rate, num_channels=1,
                                  mime_type="audio/pcm", stream=True)
        opened: asyncio.Future[AsyncSpeechStream | None] = asyncio.get_running_loop().create_future()
        stream: AsyncSpeechStream | None = None

        async def send() -> None:
            nonlocal stream
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    if stream is not None:
                        await stream.flush()        # speak what was sent so far, even mid-sentence
                    continue
                if stream is None:
                    stream = self._plugin._client.open_stream(self._plugin._config(), request_id=request_id,
                                                              timeout=self._plugin._timeout_s)
                    output_emitter.start_segment(segment_id=request_id)
                    opened.set_result(stream)
                    self._mark_started()
                await stream.send_text(item)
            if stream is None:
                opened.set_result(None)             # no text: nothing to synthesize, no call
            else:
                await stream.end()                  # the server speaks the rest, then Done

        async def receive() -> None:
            s = await opened
            if s is None:
                return
            done = False
            async for ev in s:
                if isinstance(ev, Audio):
                    start = ev.reply_start_ms
                    # the characters whose sound starts in this chunk, before its audio (they go with its frames)
                    output_emitter.push_timed_transcript([
                        TimedString(t.text, start_time=(t.start_ms - start) / 1000, end_time=(t.end_ms - start) / 1000)
                        for t in ev.timings])
                    output_emitter.push(ev.audio)
                elif isinstance(ev, Done):
                    done = True
            if not done:
                raise APIConnectionError("tts.v1 stream ended without its summary")
            output_emitter.end_segment()

        tasks = [asyncio.create_task(send(), name="tts.v1 send"), asyncio.create_task(receive(), name="tts.v1 recv")]
        try:
            await asyncio.gather(*tasks)
        except TTSError as err:
            raise _api_error(err, request_id) from err
        finally:
            # cancelled (the session interrupts the reply) or failed: cancel the call, so the server stops now
            await utils.aio.cancel_and_wait(*tasks)
            if stream is not None:
                await stream.aclose()


__all__ = ["TTS", "SynthesizeStream"]

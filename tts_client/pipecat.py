"""A Pipecat TTS service for the tts.v1 streaming API (``pip install streaming-tts[pipecat]``; pipecat-ai 1.14).

    from tts_client.pipecat import StreamingTTSService
    tts = StreamingTTSService(target="localhost:50051", voice="...")   # in a Pipeline: llm → tts → transport.output()

What it does with Pipecat's hooks:

- **One gRPC stream per conversation.** ``StreamingSynthesize`` opens at the first turn and every LLM turn (an audio
  context) is sent on it: its text as it comes (``TextAggregationMode.TOKEN`` by default: the server cuts sentences
  itself), a ``Flush`` at the end of the turn. A new stream is opened only if the server ended the old one (its idle
  timeout or maximum length) or the voice, model or language changed.
- **Word timestamps**, as Pipecat's Cartesia and ElevenLabs services give them (``push_text_frames=False`` +
  ``add_word_timestamps``): the server's per-character alignment (``config.alignment``; a Chinese "word" is a
  character, punctuation merged into the one before) becomes ``TTSTextFrame``s with presentation times, so the
  output transport releases each character as its audio plays and the assistant context holds what was heard.
- **Barge-in without closing the stream.** On Pipecat's ``InterruptionFrame`` the service sends ``Cancel(played_ms)``
  with the position its audio has reached in the output (frames pushed back to back at real time, from the first
  one of the reply); the server stops synthesizing the reply at once, answers ``Interruption`` (``heard_text``:
  the text whose sound ended by then, reported to ``on_tts_interrupted``) and the next turn goes on in the same
  stream. Audio of the cut reply still in flight is dropped.

Event handlers, besides TTSService's: ``on_tts_interrupted(service, interruption)`` (tts.v1 ``Interruption``) and
``on_tts_stream_closed(service, summary)`` (tts.v1 ``SynthesisSummary`` of a stream that ended, ``None`` if it
failed).
"""
from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import deque
from typing import Any, AsyncGenerator

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, TTSService
from pipecat.transcriptions.language import Language

from .aio import AsyncTTSClient
from .client import make_config
from .errors import TTSError
from .speech import Audio, AsyncSpeechStream, Done, Interrupted, Rejected

_NS = 1_000_000_000


@dataclasses.dataclass
class _Context:
    """A Pipecat audio context (an LLM turn, or a TTSSpeakFrame) on our stream: its text's span in the stream."""

    id: str
    start: int                          # code points sent on the stream before its text
    end: int                            # ... after it (so far)
    text: str = ""
    flushed: bool = False
    first_ms: float | None = None       # stream timeline: where its audio begins (word times are from there)
    spoken_to: int = 0                  # the end of the last segment whose audio ended (stream span)
    carry: list = dataclasses.field(default_factory=list)   # the last word of the last chunk, not yet given


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _words(timings, first_ms: float, carry: list) -> list[list]:
    """Our per-character alignment → words ``[text, seconds from the context's audio start, latin, end]``: a Chinese
    character is a word, Latin letters and digits sent together make one, punctuation and spaces go with the word
    before them. ``carry``: the previous chunk's last word (a chunk may begin with the marks that follow it)."""
    words = [list(w) for w in carry]
    prefix = ""                         # marks before the first word of a context (an opening quote)
    for t in timings:
        if not t.text:
            continue
        latin = all(_is_latin(ch) for ch in t.text)
        last = words[-1] if words else None
        if latin and last and last[2] and last[3] == t.start and _is_latin(last[0][-1]):
            last[0] += t.text
        elif not any(ch.isalnum() for ch in t.text):
            if last is None:
                prefix += t.text
                continue
            last[0] += t.text
        else:
            words.append([prefix + t.text, max(0.0, (t.start_ms - first_ms) / 1000), latin, t.end])
            prefix = ""
            continue
        last[3] = t.end
    return words


def _runs(words: list[list]) -> list[tuple[list[tuple[str, float]], bool]]:
    """Words in runs of one kind: ``(words, includes_inter_frame_spaces)`` (Chinese: True, no spaces between)."""
    runs: list[tuple[list[tuple[str, float]], bool]] = []
    for text, start, latin, _ in words:
        if not runs or runs[-1][1] != (not latin):
            runs.append(([], not latin))
        runs[-1][0].append((text, start))
    return runs


class _Conversation:
    """One StreamingSynthesize call and what the service knows about it."""

    def __init__(self, stream: AsyncSpeechStream, config_key: tuple):
        self.stream = stream
        self.config_key = config_key
        self.sent_chars = 0             # code points of text sent (the server's span frame)
        self.reply = 0                  # the reply the server is speaking (0, +1 per accepted Cancel)
        self.reply_has_text = False     # text sent since the last Cancel (else a Cancel is refused)
        self.sent_ms = 0.0              # audio received on the stream (its offset_ms timeline)
        self.reply_start_ms = 0.0       # where the current reply's audio begins
        self.contexts: dict[str, _Context] = {}
        self.task: asyncio.Task | None = None
        self.closed = False
        self.summary = None


class StreamingTTSService(TTSService):
    """Pipecat ``TTSService`` speaking tts.v1 ``StreamingSynthesize`` to our gateway (see the module docstring).

    Args:
        target: the gateway's ``host:port``.
        token: the tenant's bearer token ("" when the gateway does not check).
        voice: a built-in voice name or a registered voice id ("" = the server's default voice).
        model: a decoder engine ("" = the server's default).
        language: "", "zh", "en" (or a Pipecat ``Language``): a hint for the text frontend.
        speed: 0 (= 1.0) or 0.5 .. 2.0.
        sample_rate: output rate (None = the pipeline's ``audio_out_sample_rate``).
        client: an ``AsyncTTSClient`` to share (its channel); the service makes its own otherwise.
        stream_timeout_s: the gRPC deadline of one stream (the gateway ends streams at its own maximum too).
        text_aggregation_mode: ``TOKEN`` (default: tokens go to the server as they come) or ``SENTENCE``.
    """

    def __init__(self, *, target: str = "localhost:50051", token: str = "", voice: str = "", model: str = "",
                 language: Language | str | None = None, speed: float = 0.0, sample_rate: int | None = None,
                 client: AsyncTTSClient | None = None, stream_timeout_s: float = 3600.0,
                 text_aggregation_mode: TextAggregationMode = TextAggregationMode.TOKEN, **kwargs):
        settings = TTSSettings(model=model or None, voice=voice or None, language=language)
        super().__init__(push_text_frames=False, push_start_frame=True, pause_frame_processing=False,
                         sample_rate=sample_rate, text_aggregation_mode=text_aggregation_mode,
                         settings=settings, **kwargs)
        self._own_client = client is None
        self._client = client or AsyncTTSClient(target, token=token, timeout=stream_timeout_s)
        self._speed = speed
        self._stream_timeout_s = stream_timeout_s
        self._conv: _Conversation | None = None
        # the output as the service models it: audio frames pushed downstream play back to back at real time
        self._play_end_ns = 0
        self._playout: deque[tuple[int, float, float, str]] = deque(maxlen=512)  # (clock ns, stream ms, ms, ctx)
        self._last_word_pts = 0             # the latest presentation time of a word pushed
        self._register_event_handler("on_tts_interrupted")
        self._register_event_handler("on_tts_stream_closed")

    # ---- Pipecat service interface --------------------------------------------------------------------------------
    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        code = str(language.value if isinstance(language, Language) else language).lower()
        for ours in ("zh", "en"):
            if code == ours or code.startswith(ours + "-"):
                return ours
        return None

    async def stop(self, frame: EndFrame):
        await super().stop(frame)           # the audio contexts have played
        await self._end_conversation(wait=True)
        await self._close_client()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        await self._end_conversation(wait=False)
        await self._close_client()

    async def on_turn_context_created(self, context_id: str):
        await self._ensure_conversation()    # the stream (and the server's voice lookup) before the first token

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        try:
            conv = await self._ensure_conversation()
        except TTSError as err:
            yield ErrorFrame(error=f"{self}: cannot open a stream: {err}")
            return
        ctx = conv.contexts.get(context_id)
        if ctx is None:
            ctx = conv.contexts[context_id] = _Context(context_id, conv.sent_chars, conv.sent_chars)
        await conv.stream.send_text(text)
        conv.sent_chars += len(text)
        conv.reply_has_text = True
        ctx.end = conv.sent_chars
        ctx.text += text
        await self.start_tts_usage_metrics(text)
        yield None                          # audio arrives through the stream's reader

    async def flush_audio(self, context_id: str | None = None):
        conv = self._conv
        ctx = conv.contexts.get(context_id or "") if conv else None
        if ctx is None or conv.closed:
            return
        ctx.flushed = True
        await conv.stream.flush()
        await self._maybe_complete(conv, ctx)

    async def on_audio_context_interrupted(self, context_id: str):
        conv = self._conv
        if conv is None:
            return
        conv.contexts.pop(context_id, None)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InterruptionFrame):
            # where the output has got to, before the base class drops the contexts; the cancel goes after
            played = self._played_ms()
            await super().process_frame(frame, direction)
            await self._cancel_reply(played)
            return
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if isinstance(frame, TTSTextFrame) and frame.pts:
            self._last_word_pts = max(self._last_word_pts, frame.pts)
        elif isinstance(frame, (TTSStoppedFrame, LLMFullResponseEndFrame)) and frame.pts:
            # pipecat 1.14 stamps these with the last word it timed itself, but words it held for a sentence not yet
            # confirmed (TOKEN mode: the reply's last sentence, when its audio came before the LLM's end) are
            # replayed later without advancing that stamp, so the end of the turn would be released before them
            # and the assistant context would lose the last sentence: never before the turn's last word
            frame.pts = max(frame.pts, self._last_word_pts)
        if (isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM
                and "tts_offset_ms" in frame.metadata):
            now = self.get_clock().get_time()
            start = max(now, self._play_end_ns)
            ms = len(frame.audio) / 2 / frame.num_channels / frame.sample_rate * 1000
            self._play_end_ns = start + int(ms * 1e6)
            self._playout.append((start, frame.metadata["tts_offset_ms"], ms, frame.context_id or ""))
        await super().push_frame(frame, direction)

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:
        changed = await super()._update_settings(delta)
        if changed.keys() & {"voice", "model", "language"} and self._conv is not None:
            # a stream's voice is fixed by its config: the next turn opens a stream with the new one
            await self._end_conversation(wait=False, graceful=True)
        return changed

    # ---- the stream -----------------------------------------------------------------------------------------------
    def _config_key(self) -> tuple:
        def given(v):
            return v if isinstance(v, str) else ""
        return (given(self._settings.voice), given(self._settings.model), given(self._settings.language),
                self.sample_rate, self._speed)

    async def _ensure_conversation(self) -> _Conversation:
        conv = self._conv
        if conv is not None and not conv.closed and conv.config_key == self._config_key():
            return conv
        if conv is not None:
            await self._end_conversation(wait=False, graceful=True)
        voice, model, language, rate, speed = key = self._config_key()
        config = make_config(voice=voice, model=model, language=language, sample_rate=rate, encoding="linear16",
                             speed=speed, alignment=True)
        stream = self._client.open_stream(config, request_id=uuid.uuid4().hex[:16], timeout=self._stream_timeout_s)
        conv = self._conv = _Conversation(stream, key)
        self._playout.clear()               # positions are the new stream's
        conv.task = self.create_task(self._read(conv), name=f"{self}::read")
        await self._call_event_handler("on_connected")
        return conv

    async def _end_conversation(self, wait: bool, graceful: bool = False):
        """``wait``: half-close and read to the summary; ``graceful``: half-close and let the reader finish it;
        neither: cancel the call."""
        conv, self._conv = self._conv, None
        if conv is None or conv.task is None:
            return
        if not conv.closed and conv.sent_chars and (wait or graceful):
            await conv.stream.end()         # the server finishes what it has, then Done
            if wait:
                try:
                    await asyncio.wait_for(asyncio.shield(conv.task), 30)
                except (asyncio.TimeoutError, Exception):
                    pass
            return
        await conv.stream.aclose()
        await self.cancel_task(conv.task)

    async def _read(self, conv: _Conversation):
        summary = None
        try:
            async for ev in conv.stream:
                if isinstance(ev, Audio):
                    await self._on_audio(conv, ev)
                elif isinstance(ev, Interrupted):
                    conv.reply_start_ms = ev.interruption.sent_ms
                    await self._call_event_handler("on_tts_interrupted", ev.interruption)
                elif isinstance(ev, Rejected):
                    logger.warning(f"{self}: the server refused {ev.field}: {ev.message}")
                    if ev.field.startswith("cancel"):
                        conv.reply -= 1        # that Cancel had no effect: the reply goes on
                elif isinstance(ev, Done):
                    summary = ev.summary
        except TTSError as err:
            active = [c for c in conv.contexts.values() if self.audio_context_available(c.id)]
            if active:
                await self.push_error(error_msg=f"{self}: stream failed: {err}", exception=err)
            else:   # e.g. the gateway's idle timeout between turns: the next turn opens a new stream
                logger.debug(f"{self}: stream ended: {err}")
        finally:
            conv.closed = True
            conv.summary = summary
            for ctx in list(conv.contexts.values()):       # nothing more comes for them
                await self._finish_context(conv, ctx)
            if self._conv is conv:
                self._conv = None
            await self._call_event_handler("on_tts_stream_closed", summary)

    async def _on_audio(self, conv: _Conversation, ev: Audio):
        c = ev.chunk
        conv.sent_ms = max(conv.sent_ms, c.offset_ms + c.duration_ms)
        if ev.reply != conv.reply:
            return                          # the cut reply's audio, still in flight when it was cut
        ctx = next((x for x in conv.contexts.values() if x.start <= c.span.start < max(x.end, x.start + 1)), None)
        if ctx is None or not self.audio_context_available(ctx.id):
            return
        if ctx.first_ms is None:
            ctx.first_ms = c.offset_ms
        if c.audio:
            frame = TTSAudioRawFrame(audio=c.audio, sample_rate=c.sample_rate, num_channels=1, context_id=ctx.id)
            frame.metadata["tts_offset_ms"] = c.offset_ms
            await self.append_to_audio_context(ctx.id, frame)
        words = _words(ev.timings, ctx.first_ms, ctx.carry)
        # the last word waits for the next chunk, which may begin with the marks after it ("好" + "，"), unless the
        # segment ends here (then every character of it has come)
        ctx.carry = [] if c.segment_end or not words else [words.pop()]
        for run, cjk in _runs(words):
            # a Chinese character carries its own spacing (none), a Latin word is spaced from the next as usual
            await self.add_word_timestamps(run, ctx.id, includes_inter_frame_spaces=cjk)
        if c.segment_end:
            ctx.spoken_to = max(ctx.spoken_to, c.span.end)
        await self._maybe_complete(conv, ctx)

    async def _maybe_complete(self, conv: _Conversation, ctx: _Context):
        """A flushed context is complete once the segment reaching the end of its speakable text has ended (the
        server cuts segments at a flush, so no segment runs on into the next context's text)."""
        if ctx.flushed and ctx.spoken_to >= ctx.start + len(ctx.text.rstrip()):
            await self._finish_context(conv, ctx)

    async def _finish_context(self, conv: _Conversation, ctx: _Context):
        conv.contexts.pop(ctx.id, None)
        if self.audio_context_available(ctx.id):
            await self.append_to_audio_context(ctx.id, TTSStoppedFrame(context_id=ctx.id))
            await self.remove_audio_context(ctx.id)

    # ---- barge-in -------------------------------------------------------------------------------------------------
    def _played_ms(self) -> float | None:
        """The stream position the output has played to now (None: nothing of ours pushed yet)."""
        now = self.get_clock().get_time()
        played = None
        for start, offset, ms, _ in self._playout:
            if start > now:
                break
            played = offset + min(ms, (now - start) / 1e6)
        return played

    async def _cancel_reply(self, played: float | None):
        self._playout.clear()
        self._play_end_ns = 0
        conv = self._conv
        if conv is None or conv.closed or not conv.reply_has_text:
            return
        # what played is within the audio received (the server refuses a position past what it sent); nothing
        # played of this reply: its start
        played = conv.reply_start_ms if played is None else played
        played = min(max(played, 0.0), conv.sent_ms)
        await conv.stream.cancel(played)
        conv.reply += 1
        conv.reply_has_text = False
        for ctx in list(conv.contexts.values()):
            conv.contexts.pop(ctx.id, None)

    async def _close_client(self):
        if self._own_client:
            await self._client.close()


__all__ = ["StreamingTTSService"]

"""A conversation's speech stream: one StreamingSynthesize call held open across replies, with barge-in.

    stream = client.open_stream(config)            # TTSClient (threads) or AsyncTTSClient (asyncio: await each call)
    stream.send_text("您好，"); stream.send_text("请问…"); stream.flush()
    for event in stream:                           # Audio, Interrupted, Rejected, then Done
        ...
    stream.cancel(played_ms)                       # barge-in: the server stops this reply and answers Interrupted
    stream.send_text("好的。")                      # the next reply, same stream, same voice
    stream.end()                                   # no more text: the stream ends with Done(summary)

Sending and reading are independent (send from the LLM's task, read from the player's); a framework plugin maps
its turn / interruption / word-timestamp hooks onto these calls and events. Times are ms of the stream's audio
(``offset_ms`` timeline: every reply continues it); ``Audio.reply_start_ms`` is where the reply began, for times
relative to a reply (``Timing.start_ms - reply_start_ms``).
"""
from __future__ import annotations

import asyncio
import math
import queue
import threading
from dataclasses import dataclass, field

import grpc

from .errors import TTSError, from_rpc_error
from tts.v1 import tts_pb2


@dataclass
class Timing:
    """One character (or one stretch read as a whole: "9:45") of the text sent, and when it sounds."""

    text: str
    start: int                      # code points in all the text sent on this stream
    end: int
    start_ms: float
    end_ms: float
    silent: bool                    # punctuation, spaces, marks: no voice of their own


@dataclass
class Audio:
    chunk: tts_pb2.AudioChunk       # .audio (bytes in the config's encoding), .sample_rate, .offset_ms, .duration_ms
    reply: int
    reply_start_ms: float           # where this reply's audio began in the stream
    timings: list[Timing] = field(default_factory=list)   # with config.alignment: characters starting in it
    estimated: bool = False         # the engine estimates where characters sit (README: its error)

    @property
    def audio(self) -> bytes:
        return self.chunk.audio


@dataclass
class Interrupted:
    interruption: tts_pb2.Interruption    # .heard_text, .unspoken_text, .played_ms, .sent_ms, .reply

    @property
    def heard_text(self) -> str:
        return self.interruption.heard_text


@dataclass
class Rejected:
    """A request the server refused without ending the stream (a bad cancel); it had no effect."""

    field: str
    message: str


@dataclass
class Done:
    summary: tts_pb2.SynthesisSummary


class _Events:
    """Responses → events; keeps the text sent so timings carry their characters."""

    def __init__(self):
        self.text: list[str] = []
        self._joined = ""
        self._lock = threading.Lock()           # sent from one thread, read in another
        self.reply_start: dict[int, float] = {}
        self.sent_ms = 0.0

    def sent(self, piece: str) -> None:
        with self._lock:
            self.text.append(piece)

    def _all(self) -> str:
        with self._lock:
            if self.text:
                self._joined += "".join(self.text)
                self.text.clear()
            return self._joined

    def event(self, resp):
        kind = resp.WhichOneof("response")
        if kind == "audio":
            c = resp.audio
            start = self.reply_start.setdefault(c.reply, c.offset_ms)
            self.sent_ms = c.offset_ms + c.duration_ms
            text = self._all() if len(c.alignment) else ""
            return Audio(c, c.reply, start, [Timing(text[a.span.start:a.span.end], a.span.start, a.span.end,
                                                    a.start_ms, a.end_ms, a.silent) for a in c.alignment],
                         c.alignment_estimated)
        if kind == "interrupted":
            return Interrupted(resp.interrupted)
        if kind == "rejected":
            return Rejected(resp.rejected.field, resp.rejected.message)
        return Done(resp.summary)


def _request(kind: str, value=None) -> tts_pb2.StreamingSynthesizeRequest:
    if kind == "config":
        return tts_pb2.StreamingSynthesizeRequest(config=value)
    if kind == "text":
        return tts_pb2.StreamingSynthesizeRequest(text=value)
    if kind == "flush":
        return tts_pb2.StreamingSynthesizeRequest(flush=tts_pb2.Flush())
    return tts_pb2.StreamingSynthesizeRequest(cancel=tts_pb2.Cancel(played_ms=value))


def _played(played_ms: float) -> float:
    played_ms = float(played_ms)
    if math.isnan(played_ms):
        raise ValueError("played_ms is NaN")
    return played_ms


_END = object()


class SpeechStream:
    """Blocking version (``TTSClient.open_stream``): the send methods may be called from any thread while another
    iterates the events."""

    def __init__(self, stub, config, metadata, timeout):
        self._q: queue.Queue = queue.Queue()
        self._q.put(_request("config", config))
        self._events = _Events()
        self._lock = threading.Lock()           # text is recorded and queued in one order
        self._call = stub.StreamingSynthesize(self._requests(), metadata=metadata, timeout=timeout)

    def _requests(self):
        while (item := self._q.get()) is not _END:
            yield item

    def send_text(self, text: str) -> None:
        with self._lock:
            self._events.sent(text)
            self._q.put(_request("text", text))

    def flush(self) -> None:
        self._q.put(_request("flush"))

    def cancel(self, played_ms: float) -> None:
        """Barge-in: ``played_ms`` of the stream's audio were played (the player's position)."""
        self._q.put(_request("cancel", _played(played_ms)))

    def end(self) -> None:
        """No more text: the server finishes what it has and ends with ``Done``."""
        self._q.put(_END)

    def close(self) -> None:
        """Abandon the stream now (the call is cancelled)."""
        self._q.put(_END)
        self._call.cancel()

    def __iter__(self):
        try:
            for resp in self._call:
                yield self._events.event(resp)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(err) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncSpeechStream:
    """asyncio version (``AsyncTTSClient.open_stream``)."""

    def __init__(self, stub, config, metadata, timeout):
        self._q: asyncio.Queue = asyncio.Queue()
        self._q.put_nowait(_request("config", config))
        self._events = _Events()
        self._call = stub.StreamingSynthesize(self._requests(), metadata=metadata, timeout=timeout)

    async def _requests(self):
        while (item := await self._q.get()) is not _END:
            yield item

    async def send_text(self, text: str) -> None:
        self._events.sent(text)
        self._q.put_nowait(_request("text", text))

    async def flush(self) -> None:
        self._q.put_nowait(_request("flush"))

    async def cancel(self, played_ms: float) -> None:
        self._q.put_nowait(_request("cancel", _played(played_ms)))

    async def end(self) -> None:
        self._q.put_nowait(_END)

    async def aclose(self) -> None:
        self._q.put_nowait(_END)
        self._call.cancel()

    async def __aiter__(self):
        try:
            async for resp in self._call:
                yield self._events.event(resp)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(err) from None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


__all__ = ["Audio", "AsyncSpeechStream", "Done", "Interrupted", "Rejected", "SpeechStream", "TTSError", "Timing"]

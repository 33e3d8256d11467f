"""In-process stand-ins for the gateway's stages: decoder stubs that follow a script per call, a frontend that cuts
one segment per text piece, and a ``Stages`` with the same bookkeeping interface as services.gateway.stages."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np

from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2

RATE = 24000
CHUNK_SAMPLES = 2400


def rpc_error(code: grpc.StatusCode, details: str = "", trailers: tuple = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details or code.name)


def chunk(index: int) -> decoder_pb2.DecodeResponse:
    pcm = np.full(CHUNK_SAMPLES, 0.1 * (index + 1), np.float32).tobytes()
    return decoder_pb2.DecodeResponse(chunk=decoder_pb2.AudioChunk(
        pcm=pcm, sample_rate=RATE, segment_index=index, num_samples=CHUNK_SAMPLES, segment_end=True))


class FakeCall:
    """One Decode call: ``received`` holds the requests it read, in order."""

    def __init__(self, decoder: "FakeDecoder", requests, script):
        self.decoder = decoder
        self.requests = requests.__aiter__()
        self.script = script
        self.received: list = []
        self.cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def read(self, n: int | None = None) -> None:
        """Read ``n`` more requests (None: until the stream ends)."""
        while n is None or n > 0:
            try:
                self.received.append(await self.requests.__anext__())
            except StopAsyncIteration:
                return
            n = None if n is None else n - 1

    def __aiter__(self):
        return self.script(self)


# ---- scripts: what a decoder does on one call ---------------------------------------------------------------------
def refuse(code: grpc.StatusCode, after: int = 1, trailers: tuple = ()):
    """Read ``after`` requests, then fail with ``code`` before answering anything."""
    async def run(call: FakeCall):
        await call.read(after)
        raise rpc_error(code, trailers=trailers)
        yield                                         # an async generator
    return run


def speak(cost: float = 0.5, fail_after: int | None = None):
    """Read the whole stream, then one chunk per segment and a summary; with ``fail_after``, fail UNAVAILABLE after
    that many chunks."""
    async def run(call: FakeCall):
        await call.read()
        for sent, req in enumerate(r for r in call.received if r.WhichOneof("request") == "segment"):
            if fail_after is not None and sent == fail_after:
                raise rpc_error(grpc.StatusCode.UNAVAILABLE, "decoder went away")
            yield chunk(req.segment.index)
        yield decoder_pb2.DecodeResponse(summary=decoder_pb2.DecodeSummary(
            tokens=7, engine="kokoro", voice=call.decoder.name, compute_per_audio_s=cost))
    return run


class FakeDecoder:
    """A DecoderStub whose n-th Decode call runs ``scripts[n]``; ``CheckAdmission`` answers ``admits`` (True; False:
    refused for capacity; an AioRpcError: raised)."""

    def __init__(self, name: str, *scripts, admits=True):
        self.name = name
        self.scripts = list(scripts)
        self.calls: list[FakeCall] = []
        self.admits = admits
        self.checks: list = []

    async def CheckAdmission(self, request, metadata=None, timeout=None):
        self.checks.append(request)
        if isinstance(self.admits, Exception):
            raise self.admits
        if self.admits:
            return decoder_pb2.CheckAdmissionResponse(admitted=True)
        return decoder_pb2.CheckAdmissionResponse(admitted=False, limit="capacity", retry_after_s=1.5,
                                                  reason=f"capacity: kokoro engine: {self.name} is full")

    def Decode(self, requests, metadata=None, timeout=None):
        assert len(self.calls) < len(self.scripts), f"{self.name}: unexpected Decode call"
        call = FakeCall(self, requests, self.scripts[len(self.calls)])
        self.calls.append(call)
        return call

    def __repr__(self):
        return f"FakeDecoder({self.name})"


class FakeNormalize:
    """The frontend's Normalize call: one segment per text piece (after the config), as the pieces arrive."""

    def __init__(self, requests):
        self.requests = requests
        self.config = None
        self.cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def _run(self):
        index, pos = 0, 0
        async for req in self.requests:
            if req.WhichOneof("request") == "config":
                self.config = req.config
            elif req.WhichOneof("request") == "text":
                seg = frontend_pb2.Segment(index=index, text=req.text, normalized=req.text,
                                           span=frontend_pb2.Span(start=pos, end=pos + len(req.text)))
                index, pos = index + 1, pos + len(req.text)
                yield frontend_pb2.NormalizeResponse(segment=seg)

    def __aiter__(self):
        return self._run()


class FakeFrontend:
    def __init__(self):
        self.calls: list[FakeNormalize] = []

    def Normalize(self, requests, metadata=None, timeout=None):
        self.calls.append(FakeNormalize(requests))
        return self.calls[-1]


class FakeStages:
    """The bookkeeping part of services.gateway.stages.Stages over fake stubs (round-robin, costs, open streams)."""

    def __init__(self, *decoders, frontend=None):
        self.decoders = list(decoders)
        self.frontend = frontend or FakeFrontend()
        self.open = {d: 0 for d in decoders}
        self.cost = {d: 0.0 for d in decoders}
        self._next = 0

    def decoder(self, exclude=()):
        for _ in range(len(self.decoders)):
            stub = self.decoders[self._next % len(self.decoders)]
            self._next += 1
            if stub not in exclude:
                return stub
        return self.decoders[0]

    def decoder_rtf(self, stub) -> float:
        return self.cost[stub] * (self.open[stub] + 1)

    def report_cost(self, stub, cost: float) -> None:
        if cost > 0:
            self.cost[stub] = cost

    def opened(self, stub, delta: int) -> None:
        self.open[stub] += delta


async def feed(call, segments) -> None:
    """Put ``segments`` on a DecoderCall's feed, then end it (the frontend's side)."""
    for seg in segments:
        await call.put(seg)
    await call.end()


def gather_later(coro) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(coro)

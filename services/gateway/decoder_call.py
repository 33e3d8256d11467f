"""One utterance's Decode stream, on whichever decoder takes it.

``DecoderFeed`` keeps the stream's requests (the config, then the segments) until a decoder answers, so the stream
can be replayed from its first request. ``DecoderCall`` picks the decoder, opens the call once there is a segment,
and until the decoder's first answer moves the stream: to another decoder when this one is down or at capacity
(UNAVAILABLE, RESOURCE_EXHAUSTED; each decoder once), or, once, to the same decoder with a registered voice's full
conditioning when it does not hold the voice's prompt (NOT_FOUND). After the first answer (audio may have reached
the caller) a failure is final.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Callable

import grpc

from shared.errors import ResourceExhausted, from_rpc_error
from tts.decoder.v1 import decoder_pb2

from .metrics import PROMPT_RESENDS

log = logging.getLogger("gateway.pipeline")       # the name its lines have always had in the logs

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


class DecoderFeed:
    """The requests of one Decode stream (config, then segments), kept until a decoder answers so the stream can be
    replayed on another decoder. ``put`` waits while the current reader is ``limit`` items behind (back-pressure)."""

    def __init__(self, config, limit: int):
        self.items: list = [config]
        self.done = False
        self.limit = max(1, limit)
        self.pos = 0                 # items taken by the current reader
        self.gen = 0
        self.keep = True             # False once a decoder answered: taken items are dropped
        self.cond = asyncio.Condition()

    async def put(self, item) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: len(self.items) - self.pos < self.limit)
            self.items.append(item)
            self.cond.notify_all()

    async def end(self) -> None:
        async with self.cond:
            self.done = True
            self.cond.notify_all()

    def started(self) -> None:
        self.keep = False
        for i in range(self.pos):
            self.items[i] = None

    def reader(self):
        """A new iterator over all requests from the first; an older reader no longer counts for back-pressure."""
        self.gen += 1
        self.pos = 0
        return self._read(self.gen)

    async def _read(self, gen: int):
        i = 0
        while True:
            async with self.cond:
                await self.cond.wait_for(lambda: i < len(self.items) or self.done or gen != self.gen)
                if i >= len(self.items) or gen != self.gen:
                    return        # the end, or a newer reader replaced this one (its call was dropped)
                item = self.items[i]
                if not self.keep:
                    self.items[i] = None
                i += 1
                if gen == self.gen:
                    self.pos = i
                    self.cond.notify_all()
            yield item


class DecoderCall:
    """The Decode stream of one plan (``pipeline.Plan``). ``stages`` gives the decoders (``stages.Stages``);
    ``timeout()`` the seconds a call opened now may take; ``limit`` how far the feed may run ahead of the decoder.
    Use ``put``/``end`` from the frontend's side, iterate ``responses()`` once, and ``close()`` at the end."""

    def __init__(self, stages, plan, timeout: Callable[[], float], limit: int, stub=None):
        self.stages = stages
        self.plan = plan
        self.timeout = timeout
        self.feed = DecoderFeed(decoder_pb2.DecodeRequest(config=plan.decode_config), limit)
        # the decoder is chosen now, so the frontend sizes segments by its measured rate (the call opens later);
        # ``stub``: the one to try first (a stream's next reply goes where its voice's prompt is held)
        self.stub = stub if stub is not None and stub in stages.decoders else stages.decoder()
        self.rtf = stages.decoder_rtf(self.stub)      # before this stream counts as open on it
        self.tried = [self.stub]
        self.full_speaker = plan.full_speaker
        self.call = None
        stages.opened(self.stub, +1)

    async def admit(self) -> None:
        """Before the first segment is cut: ask the chosen decoder, then the others, whether it would admit this
        stream now (``CheckAdmission``, which keeps an admitted stream's place for a moment under its request id: the
        Decode call claims it at the first segment; an idle stream holds no decoder slot beyond that), and move to
        the first that would. When every decoder answers no: RESOURCE_EXHAUSTED at once with the soonest retry, the
        decoder's reason naming the limit. A decoder that does not answer is left to the Decode call (which replays
        elsewhere as before); so is a later refusal at the first segment."""
        cfg = self.plan.decode_config
        req = decoder_pb2.CheckAdmissionRequest(engine=cfg.engine, tenant=cfg.tenant, priority=cfg.priority,
                                                hold_request_id=cfg.request_id)
        refusals = []
        for stub in [self.stub, *(d for d in self.stages.decoders if d is not self.stub)]:
            try:
                resp = await stub.CheckAdmission(req, metadata=self.plan.metadata, timeout=min(2.0, self.timeout()))
            except grpc.aio.AioRpcError:
                return                    # down or older: the Decode call finds out and moves on
            if resp.admitted:
                if stub is not self.stub:
                    self.stages.opened(self.stub, -1)
                    self.stub = stub
                    self.stages.opened(stub, +1)
                    self.tried = [stub]
                return
            refusals.append(resp)
        best = min(refusals, key=lambda r: r.retry_after_s)
        raise ResourceExhausted(f"decoder: {best.reason}", retry_after_s=best.retry_after_s)

    async def put(self, segment) -> None:
        await self.feed.put(decoder_pb2.DecodeRequest(segment=segment))

    async def end(self) -> None:
        await self.feed.end()

    def _open(self) -> None:
        self.call = self.stub.Decode(self.feed.reader(), metadata=self.plan.metadata, timeout=self.timeout())

    async def responses(self) -> AsyncIterator[decoder_pb2.DecodeResponse]:
        """Open the call and yield the decoder's responses (audio chunks, then its summary). A failure the stream
        cannot move away from is raised as the TTSError for the caller."""
        answered = False        # has the decoder sent anything? (until then the stream can move elsewhere)
        self._open()
        while True:
            try:
                async for resp in self.call:
                    if not answered:
                        answered = True
                        self.feed.started()
                    if resp.WhichOneof("response") == "summary":
                        self.stages.report_cost(self.stub, resp.summary.compute_per_audio_s)
                    yield resp
                return
            except grpc.aio.AioRpcError as err:
                if answered:
                    raise from_rpc_error("decoder", err) from None
                await self._move(err)

    async def _move(self, err: grpc.aio.AioRpcError) -> None:
        """The decoder refused the stream before answering: reopen it where it can go, or raise."""
        if err.code() == grpc.StatusCode.NOT_FOUND and self.full_speaker is not None:
            # that decoder does not hold the voice's prompt: resend the stream with its audio, once
            log.info("decoder lacks the voice prompt; resending with the reference audio",
                     extra={"reference_id": self.plan.decode_config.speaker.reference_id[:16]})
            PROMPT_RESENDS.inc()
            self.call.cancel()
            cfg = decoder_pb2.DecodeConfig()
            cfg.CopyFrom(self.plan.decode_config)
            full_speaker, self.full_speaker = self.full_speaker, None
            cfg.speaker.CopyFrom(await full_speaker())
            self.feed.items[0] = decoder_pb2.DecodeRequest(config=cfg)
            self._open()
            return
        if err.code() not in RETRYABLE or len(self.tried) >= len(self.stages.decoders):
            raise from_rpc_error("decoder", err) from None
        # no audio reached the client yet: replay config + segments on another decoder (this one is down, or at its
        # real-time capacity)
        log.warning("decoder %s before the stream started; retrying on another decoder",
                    "unavailable" if err.code() == grpc.StatusCode.UNAVAILABLE else "at capacity",
                    extra={"error": err.details(), "attempt": len(self.tried) + 1})
        self.call.cancel()
        self.stages.opened(self.stub, -1)
        self.stub = self.stages.decoder(exclude=self.tried)
        self.stages.opened(self.stub, +1)
        self.tried.append(self.stub)
        self._open()

    def close(self) -> None:
        """The stream is over (or abandoned): it no longer counts on its decoder, and its call is cancelled."""
        self.stages.opened(self.stub, -1)
        if self.call is not None:
            self.call.cancel()

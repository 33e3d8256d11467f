"""Channels and stubs to the gateway's three stages (frontend, speaker, decoders), and the decoders' bookkeeping:
round-robin choice, each one's last reported speed and how many streams this gateway has open on it."""
from __future__ import annotations

import itertools

import grpc

from shared.errors import from_rpc_error
from shared.internal_auth import client_interceptors
from shared.limits import stage_channel_options
from tts.decoder.v1 import decoder_pb2_grpc
from tts.frontend.v1 import frontend_pb2_grpc
from tts.speaker.v1 import speaker_pb2_grpc

from .settings import GatewaySettings


class Stages:
    """Channels and stubs to the three stages."""

    def __init__(self, settings: GatewaySettings):
        opts = stage_channel_options(settings.max_message_mb * 1024 * 1024)
        self.channels = []

        def channel(addr):
            ch = grpc.aio.insecure_channel(addr, options=opts, interceptors=client_interceptors(settings.internal_token) or None)
            self.channels.append(ch)
            return ch

        self.frontend = frontend_pb2_grpc.FrontendStub(channel(settings.frontend_addr))
        self.speaker = speaker_pb2_grpc.SpeakerStub(channel(settings.speaker_addr))
        self._decoder_channels = [channel(a.strip()) for a in settings.decoder_addrs.split(",") if a.strip()]
        self.decoders = [decoder_pb2_grpc.DecoderStub(ch) for ch in self._decoder_channels]
        self._next_decoder = itertools.cycle(range(len(self.decoders)))
        # what each decoder last reported about its speed (compute s per audio s, one stream alone), and how many
        # streams this gateway has open on it: together the per-stream rate the frontend sizes segments by
        self._cost = [0.0] * len(self.decoders)
        self._open = [0] * len(self.decoders)

    def decoder_rtf(self, stub) -> float:
        """The compute seconds per second of audio a new stream on ``stub`` will get (0 = not known yet)."""
        i = self.decoders.index(stub)
        return self._cost[i] * (self._open[i] + 1)

    def report_cost(self, stub, cost: float) -> None:
        if cost > 0:
            self._cost[self.decoders.index(stub)] = cost

    def opened(self, stub, delta: int) -> None:
        self._open[self.decoders.index(stub)] += delta

    def decoder(self, exclude=()) -> decoder_pb2_grpc.DecoderStub:
        """Round-robin, skipping decoders in ``exclude`` and, while another one is up, those whose channel fails."""
        fallback = None
        for _ in range(len(self.decoders)):
            i = next(self._next_decoder)
            stub = self.decoders[i]
            if stub in exclude:
                continue
            if self._decoder_channels[i].get_state() != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                return stub
            fallback = fallback or stub
        return fallback or self.decoders[next(self._next_decoder)]

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


async def call_stage(stage: str, coro):
    try:
        return await coro
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(stage, err) from None

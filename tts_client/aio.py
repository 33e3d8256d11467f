"""asyncio client for the tts.v1 API (used by the web process). Every failed call raises :class:`TTSError`.

One client (one channel) serves many callers: each method takes an optional ``token`` that overrides the client's
default bearer token for that call (the web process passes its caller's token through).
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import AsyncIterable, AsyncIterator, Iterable

import grpc
from google.protobuf import json_format

from shared.limits import client_channel_options

from .client import batch_line_record, make_config  # noqa: F401  (re-exported: built the same way)
from .client import tts_pb2, tts_pb2_grpc
from .errors import TTSError, from_rpc_error
from .speech import AsyncSpeechStream



# the address of the client a proxy (the web process) calls for, set per request: sent as x-forwarded-for, which the
# gateway believes only from its TTS_GATEWAY_TRUSTED_PROXIES (its throttle of failed authentications counts by it)
forwarded_for: ContextVar[str] = ContextVar("forwarded_for", default="")


def to_dict(message) -> dict:
    """A response message as JSON-ready dict, field names as in the proto, defaults included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class AsyncTTSClient:
    def __init__(self, target: str = "localhost:50051", token: str = "", timeout: float = 300.0):
        self.target = target
        self.token = token
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=client_channel_options())
        self.stub = tts_pb2_grpc.TextToSpeechStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    def _metadata(self, token: str | None, request_id: str = "") -> tuple:
        token = self.token if token is None else token
        md = (("authorization", f"Bearer {token}"),) if token else ()
        client = forwarded_for.get()
        md += (("x-forwarded-for", client),) if client else ()
        return md + ((("x-request-id", request_id),) if request_id else ())

    async def _unary(self, method, request, token, timeout=None):
        try:
            return await method(request, metadata=self._metadata(token), timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    # ---- synthesis ----
    async def stream(self, pieces: Iterable[str | None] | AsyncIterable[str | None], config,
                     token: str | None = None, request_id: str = "") -> AsyncIterator[tuple[str, object]]:
        """StreamingSynthesize: send ``pieces`` (``None`` = flush); yield ``("audio", AudioChunk)`` as each chunk
        arrives, then ``("summary", SynthesisSummary)``. Closing the generator early cancels the call."""

        async def requests():
            yield tts_pb2.StreamingSynthesizeRequest(config=config)
            if hasattr(pieces, "__aiter__"):
                async for piece in pieces:
                    yield _piece(piece)
            else:
                for piece in pieces:
                    yield _piece(piece)

        call = self.stub.StreamingSynthesize(requests(), metadata=self._metadata(token, request_id),
                                             timeout=self.timeout)
        try:
            async for resp in call:
                kind = resp.WhichOneof("response")
                yield kind, getattr(resp, kind)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    def open_stream(self, config, token: str | None = None, request_id: str = "",
                    timeout: float | None = None) -> AsyncSpeechStream:
        """A stream held open across replies, with barge-in (``tts_client.speech``): ``await send_text``/``flush``/
        ``cancel(played_ms)``/``end``, ``async for`` its events (Audio, Interrupted, Rejected, Done)."""
        return AsyncSpeechStream(self.stub, config, self._metadata(token, request_id), timeout or self.timeout)

    # ---- voices / frontend / admin ----
    async def list_voices(self, token: str | None = None) -> tts_pb2.ListVoicesResponse:
        """Voices, and the models (engines) the server's decoders serve with the default one."""
        return await self._unary(self.stub.ListVoices, tts_pb2.ListVoicesRequest(), token)

    async def voices(self, token: str | None = None) -> list:
        return list((await self.list_voices(token)).voices)

    async def register_voice(self, name: str, audio: bytes, prompt_text: str = "", token: str | None = None):
        return await self._unary(self.stub.RegisterVoice, tts_pb2.RegisterVoiceRequest(
            name=name, audio=audio, prompt_text=prompt_text), token)

    async def analyze(self, text: str, language: str = "", phoneme_mode: bool = False,
                      token: str | None = None) -> list:
        return list((await self._unary(self.stub.AnalyzeText, tts_pb2.AnalyzeTextRequest(
            text=text, language=language, phoneme_mode=phoneme_mode), token)).segments)

    async def reload_dictionary(self, content: str | None = None, token: str | None = None):
        """Admin: re-read (``content=None``) or replace the frontend's replace dictionary."""
        req = tts_pb2.ReloadDictionaryRequest()
        if content is not None:
            req.content = content
        return await self._unary(self.stub.ReloadDictionary, req, token)

    async def clear_cache(self, token: str | None = None):
        """Admin: free idle decoder caches."""
        return await self._unary(self.stub.ClearCache, tts_pb2.ClearCacheRequest(), token)

    # ---- batch jobs ----
    async def submit_batch(self, jsonl: bytes, config=None, name: str = "", token: str | None = None):
        req = tts_pb2.SubmitBatchRequest(name=name, jsonl=jsonl)
        if config is not None:
            req.config.CopyFrom(config)
        return await self._unary(self.stub.SubmitBatch, req, token)

    async def get_batch(self, job_id: str, include_lines: bool = False, token: str | None = None):
        return await self._unary(self.stub.GetBatch, tts_pb2.GetBatchRequest(id=job_id, include_lines=include_lines),
                                 token)

    async def list_batches(self, limit: int = 0, token: str | None = None) -> list:
        return list((await self._unary(self.stub.ListBatches, tts_pb2.ListBatchesRequest(limit=limit), token)).jobs)

    async def cancel_batch(self, job_id: str, token: str | None = None):
        return await self._unary(self.stub.CancelBatch, tts_pb2.CancelBatchRequest(id=job_id), token)

    async def delete_batch(self, job_id: str, token: str | None = None):
        return await self._unary(self.stub.DeleteBatch, tts_pb2.DeleteBatchRequest(id=job_id), token)

    async def get_batch_result(self, job_id: str, uttid: str, token: str | None = None):
        """One finished line: ``.result`` (BatchLineResult) and ``.wav`` (a complete WAV file, empty if failed)."""
        return await self._unary(self.stub.GetBatchResult, tts_pb2.GetBatchResultRequest(id=job_id, uttid=uttid),
                                 token)

    async def watch_batch(self, job_id: str, token: str | None = None) -> AsyncIterator:
        """BatchEvents (job counters + lines finished since the previous one) until the job has ended."""
        async for event in self._server_stream(self.stub.WatchBatch, tts_pb2.WatchBatchRequest(id=job_id), token):
            yield event

    async def download_batch(self, job_id: str, uttids=(), token: str | None = None) -> AsyncIterator:
        """BatchResultFiles of the finished lines (``.result`` and ``.wav``), one at a time."""
        async for item in self._server_stream(self.stub.DownloadBatch, tts_pb2.DownloadBatchRequest(
                id=job_id, uttids=list(uttids)), token):
            yield item

    async def _server_stream(self, method, request, token):
        call = method(request, metadata=self._metadata(token))       # no deadline: jobs run for long
        try:
            async for item in call:
                yield item
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    async def health(self, service: str = "", timeout: float = 3.0) -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            resp = await health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return "DOWN"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def _piece(piece: str | None):
    if piece is None:
        return tts_pb2.StreamingSynthesizeRequest(flush=tts_pb2.Flush())
    return tts_pb2.StreamingSynthesizeRequest(text=piece)


__all__ = ["AsyncTTSClient", "TTSError", "batch_line_record", "make_config", "to_dict"]

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import grpc

from shared.limits import client_channel_options
from tts.v1 import tts_pb2, tts_pb2_grpc

from .speech import SpeechStream

# every tts.v1 AudioEncoding by its lower-case name: linear16, wav, mulaw, ogg_opus, mp3, flac, aac
ENCODINGS = {name.lower(): value for name, value in tts_pb2.AudioEncoding.items() if value}


@dataclass
class StreamResult:
    chunks: list = field(default_factory=list)     # tts_pb2.AudioChunk
    summary: tts_pb2.SynthesisSummary | None = None
    first_chunk_s: float | None = None              # client-side: first piece sent → first chunk received

    @property
    def audio(self) -> bytes:
        return b"".join(c.audio for c in self.chunks)

    @property
    def sample_rate(self) -> int:
        return self.chunks[0].sample_rate if self.chunks else 0


def make_config(voice: str = "", reference_audio: bytes = b"", prompt_text: str = "", language: str = "",
                sample_rate: int = 0, encoding: str = "linear16", chunk_size: int = 0, seed: int | None = None,
                speed: float = 0.0, use_cache: bool | None = None, phoneme_mode: bool = False,
                model: str = "", alignment: bool = False) -> tts_pb2.SynthesisConfig:
    cfg = tts_pb2.SynthesisConfig(prompt_text=prompt_text, language=language, sample_rate=sample_rate,
                                  encoding=ENCODINGS[encoding.lower()], chunk_size=chunk_size, speed=speed,
                                  phoneme_mode=phoneme_mode, model=model, alignment=alignment)
    if reference_audio:
        cfg.reference_audio = reference_audio
    elif voice:
        cfg.voice = voice
    if seed is not None:
        cfg.seed = seed
    if use_cache is not None:
        cfg.use_cache = use_cache
    return cfg


class TTSClient:
    def __init__(self, target: str | None = None, token: str | None = None, timeout: float = 120.0):
        self.target = target or os.environ.get("TTS_GATEWAY", "localhost:50051")
        self.channel = grpc.insecure_channel(self.target, options=client_channel_options())
        self.stub = tts_pb2_grpc.TextToSpeechStub(self.channel)
        token = token if token is not None else os.environ.get("TTS_TOKEN", "")
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- synthesis ----
    def stream(self, pieces: Iterable[str | None], config: tts_pb2.SynthesisConfig,
               on_chunk=None) -> StreamResult:
        """Stream text pieces (``None`` = flush) and collect the audio. ``on_chunk(chunk)`` sees each chunk live."""
        result = StreamResult()
        sent_first: list[float] = []

        def requests() -> Iterator[tts_pb2.StreamingSynthesizeRequest]:
            yield tts_pb2.StreamingSynthesizeRequest(config=config)
            for piece in pieces:
                if not sent_first:
                    sent_first.append(time.perf_counter())
                if piece is None:
                    yield tts_pb2.StreamingSynthesizeRequest(flush=tts_pb2.Flush())
                else:
                    yield tts_pb2.StreamingSynthesizeRequest(text=piece)

        for resp in self.stub.StreamingSynthesize(requests(), metadata=self.metadata, timeout=self.timeout):
            if resp.WhichOneof("response") == "audio":
                if result.first_chunk_s is None and sent_first:
                    result.first_chunk_s = time.perf_counter() - sent_first[0]
                result.chunks.append(resp.audio)
                if on_chunk:
                    on_chunk(resp.audio)
            else:
                result.summary = resp.summary
        return result

    def open_stream(self, config: tts_pb2.SynthesisConfig, timeout: float | None = None) -> SpeechStream:
        """A stream held open across replies, with barge-in (``tts_client.speech``): ``send_text``/``flush``/
        ``cancel(played_ms)``/``end`` from any thread, iterate it for events (Audio, Interrupted, Rejected, Done)."""
        return SpeechStream(self.stub, config, self.metadata, timeout or self.timeout)

    def synthesize(self, text: str, config: tts_pb2.SynthesisConfig) -> tts_pb2.SynthesizeResponse:
        return self.stub.Synthesize(tts_pb2.SynthesizeRequest(config=config, text=text),
                                    metadata=self.metadata, timeout=self.timeout)

    # ---- voices / frontend ----
    def list_voices(self) -> tts_pb2.ListVoicesResponse:
        """Voices, and the models (engines) the server's decoders serve with the default one."""
        return self.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=self.metadata, timeout=self.timeout)

    def voices(self) -> list:
        return list(self.list_voices().voices)

    def models(self) -> tuple[list[str], str]:
        """The values ``SynthesisConfig.model`` accepts on this server, and the one "" means."""
        resp = self.list_voices()
        return list(resp.models), resp.default_model

    def register_voice(self, name: str, audio: bytes, prompt_text: str = "") -> tts_pb2.RegisterVoiceResponse:
        return self.stub.RegisterVoice(tts_pb2.RegisterVoiceRequest(name=name, audio=audio, prompt_text=prompt_text),
                                       metadata=self.metadata, timeout=self.timeout)

    def delete_voice(self, voice_id: str) -> None:
        self.stub.DeleteVoice(tts_pb2.DeleteVoiceRequest(id=voice_id), metadata=self.metadata, timeout=self.timeout)

    def analyze(self, text: str, language: str = "", phoneme_mode: bool = False) -> list:
        return list(self.stub.AnalyzeText(tts_pb2.AnalyzeTextRequest(text=text, language=language,
                                                                     phoneme_mode=phoneme_mode),
                                          metadata=self.metadata, timeout=self.timeout).segments)

    def health(self, service: str = "") -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        resp = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    # ---- batch jobs ----
    def submit_batch(self, jsonl: bytes | None = None, server_path: str = "",
                     config: tts_pb2.SynthesisConfig | None = None, name: str = "") -> tts_pb2.BatchJob:
        """Submit a JSONL job: its content (``jsonl``) or a file inside the gateway's allowed folder."""
        req = tts_pb2.SubmitBatchRequest(name=name)
        if jsonl is not None:
            req.jsonl = jsonl
        elif server_path:
            req.server_path = server_path
        if config is not None:
            req.config.CopyFrom(config)
        return self.stub.SubmitBatch(req, metadata=self.metadata, timeout=self.timeout)

    def get_batch(self, job_id: str, include_lines: bool = False) -> tts_pb2.BatchJob:
        return self.stub.GetBatch(tts_pb2.GetBatchRequest(id=job_id, include_lines=include_lines),
                                  metadata=self.metadata, timeout=self.timeout)

    def watch_batch(self, job_id: str, timeout: float | None = None) -> Iterator[tts_pb2.BatchEvent]:
        """Progress events until the job is DONE, CANCELLED or FAILED (no deadline unless ``timeout``)."""
        return self.stub.WatchBatch(tts_pb2.WatchBatchRequest(id=job_id), metadata=self.metadata, timeout=timeout)

    def cancel_batch(self, job_id: str) -> tts_pb2.BatchJob:
        return self.stub.CancelBatch(tts_pb2.CancelBatchRequest(id=job_id), metadata=self.metadata,
                                     timeout=self.timeout)

    def delete_batch(self, job_id: str) -> tts_pb2.DeleteBatchResponse:
        """Removes a job's records and files (cancelling it first if unfinished); frees the tenant's quota."""
        return self.stub.DeleteBatch(tts_pb2.DeleteBatchRequest(id=job_id), metadata=self.metadata,
                                     timeout=self.timeout)

    def list_batches(self, limit: int = 0) -> list:
        return list(self.stub.ListBatches(tts_pb2.ListBatchesRequest(limit=limit), metadata=self.metadata,
                                          timeout=self.timeout).jobs)

    def get_batch_result(self, job_id: str, uttid: str) -> tts_pb2.BatchResultFile:
        """One finished line: ``.result`` (BatchLineResult) and ``.wav`` (a complete WAV file, empty if failed)."""
        return self.stub.GetBatchResult(tts_pb2.GetBatchResultRequest(id=job_id, uttid=uttid),
                                        metadata=self.metadata, timeout=self.timeout)

    def download_batch(self, job_id: str, out_dir: str, uttids: Iterable[str] = ()) -> dict:
        """Write every finished line's ``<uttid>.wav`` and ``results.jsonl`` (all lines, in line order) into
        ``out_dir``. Returns {"wavs": n, "failed": n, "results": path}."""
        os.makedirs(out_dir, exist_ok=True)
        wavs = 0
        for item in self.stub.DownloadBatch(tts_pb2.DownloadBatchRequest(id=job_id, uttids=list(uttids)),
                                            metadata=self.metadata, timeout=None):
            if item.wav:
                tmp = os.path.join(out_dir, f".{item.result.uttid}.wav.part")
                with open(tmp, "wb") as f:
                    f.write(item.wav)
                os.replace(tmp, os.path.join(out_dir, f"{item.result.uttid}.wav"))
                wavs += 1
        job = self.get_batch(job_id, include_lines=True)
        path = os.path.join(out_dir, "results.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for line in job.lines:
                f.write(json.dumps(batch_line_record(line), ensure_ascii=False) + "\n")
        return {"wavs": wavs, "failed": job.failed, "results": path}


def batch_line_record(line: tts_pb2.BatchLineResult) -> dict:
    """One results.jsonl record (the same fields the gateway writes into its own results.jsonl)."""
    return {"line": line.line, "uttid": line.uttid,
            "status": tts_pb2.BatchLineState.Name(line.state).removeprefix("BATCH_LINE_").lower(),
            "normalized_text": line.normalized_text, "phonemes": line.phonemes,
            "duration_s": round(line.duration_s, 3), "rtf": round(line.real_time_factor, 3),
            "error": line.error, "attempts": line.attempts}

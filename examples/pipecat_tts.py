"""Our TTS in a Pipecat pipeline: two replies spoken on one stream, the words with their times, the audio saved.

    make run                                          # the service, gateway on localhost:50051
    .venv-pipecat/bin/python examples/pipecat_tts.py --out reply.wav

(.venv-pipecat comes from `make setup`; in a bot's own venv: `pip install "streaming-tts[pipecat]"`.) In a bot the
service sits where any Pipecat TTS does: Pipeline([transport.input(), stt, user_aggregator, llm, tts,
transport.output(), assistant_aggregator]); here TTSSpeakFrames stand in for the LLM and a small processor for the
output transport.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import wave

from loguru import logger
from pipecat.frames.frames import EndFrame, TTSAudioRawFrame, TTSSpeakFrame, TTSTextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from tts_client.pipecat import StreamingTTSService

RATE = 24000


class Collect(FrameProcessor):
    """Keeps the audio and prints each word (a Chinese character) with its presentation time."""

    def __init__(self):
        super().__init__()
        self.audio = bytearray()
        self.t0 = None

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio += frame.audio
        elif isinstance(frame, TTSTextFrame) and frame.pts is not None:
            self.t0 = frame.pts if self.t0 is None else self.t0
            print(f"{(frame.pts - self.t0) / 1e9:6.2f} s  {frame.text}")
        await self.push_frame(frame, direction)


async def main(args):
    logger.remove()                                     # Pipecat logs at DEBUG by default
    logger.add(sys.stderr, level="WARNING")
    tts = StreamingTTSService(target=args.target, voice=args.voice)
    out = Collect()
    worker = PipelineWorker(Pipeline([tts, out]), params=PipelineParams(audio_out_sample_rate=RATE),
                            cancel_on_idle_timeout=False)

    @worker.event_handler("on_pipeline_started")
    async def speak(worker, frame):
        await worker.queue_frames([TTSSpeakFrame("您好，这里是星河银行客服中心，请问有什么可以帮您？"),
                                   TTSSpeakFrame("您的账单已经发送到手机上了。"), EndFrame()])

    @tts.event_handler("on_tts_stream_closed")
    async def closed(service, summary):
        if summary is not None:
            print(f"the stream: {summary.audio_ms / 1000:.2f} s of audio, engine {summary.engine}, "
                  f"voice {summary.voice}, first audio after {summary.first_chunk_latency_ms:.0f} ms")

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    with wave.open(args.out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(out.audio))
    print(f"wrote {args.out}: {len(out.audio) / 2 / RATE:.2f} s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=os.environ.get("TTS_GATEWAY", "localhost:50051"))
    p.add_argument("--voice", default="")
    p.add_argument("--out", default="pipecat_reply.wav")
    asyncio.run(main(p.parse_args()))

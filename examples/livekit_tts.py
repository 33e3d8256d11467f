"""Our TTS as a LiveKit Agents plugin: one reply streamed as an AgentSession streams it, the timed transcript
printed, the audio saved.

    make run                                          # the service, gateway on localhost:50051
    .venv-livekit/bin/python examples/livekit_tts.py --out reply.wav

(.venv-livekit comes from `make setup`; in an agent's own venv: `pip install "streaming-tts[livekit]"`.) In an agent
it is the session's TTS: AgentSession(stt=..., llm=..., vad=..., tts=TTS(target=..., voice=...),
use_tts_aligned_transcript=True); the session then does what main() does below for every reply.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import wave

from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT

from tts_client.livekit import TTS


async def main(args):
    tts = TTS(target=args.target, voice=args.voice, sample_rate=24000)
    audio = bytearray()
    async with tts.stream() as stream:
        for piece in ["您好，", "这里是星河", "银行客服中心，", "请问有什么", "可以帮您？"]:   # an LLM's chunks
            stream.push_text(piece)
        stream.end_input()
        async for ev in stream:
            audio += bytes(ev.frame.data)
            for t in ev.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, []):
                print(f"{t.start_time:6.2f}–{t.end_time:5.2f} s  {t}")
    await tts.aclose()
    with wave.open(args.out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(bytes(audio))
    print(f"wrote {args.out}: {len(audio) / 2 / 24000:.2f} s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=os.environ.get("TTS_GATEWAY", "localhost:50051"))
    p.add_argument("--voice", default="")
    p.add_argument("--out", default="livekit_reply.wav")
    asyncio.run(main(p.parse_args()))

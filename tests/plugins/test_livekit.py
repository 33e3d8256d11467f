"""LiveKit Agents (livekit-agents 1.8.9, its own venv): our TTS plugin's stream against our real stack on loopback,
driven as an AgentSession's tts_node drives it: `async with tts.stream()`, the LLM's chunks pushed as they come
(`push_text`), `end_input()`, the audio frames read as they arrive (each carrying the TimedStrings of the characters
it starts); an interruption cancels the reader and closes the stream (`aclose()`) mid-reply."""
from __future__ import annotations

import asyncio
import wave

from livekit import rtc
from livekit.agents import tts as lk_tts
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT, TimedString

from tests.plugins.conftest import run_example
from tests.procs import wait_until
from tts_client.aio import AsyncTTSClient
from tts_client.client import make_config
from tts_client.livekit import TTS
from tts_client.speech import Audio

RATE = 24000
REPLY = "您好，这里是星河银行客服中心。请问您需要查询账单，还是办理分期？"
LONG = "".join(f"第{i}个问题，关于您的信用卡账单和还款日期，我们马上为您查询。" for i in range(1, 9))


def chunks(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


async def push_llm(stream: lk_tts.SynthesizeStream, text: str, pace_s: float = 0.03):
    """The session's text forwarding: the LLM's chunks as they are generated (paced), then end_input."""
    for piece in chunks(text):
        stream.push_text(piece)
        await asyncio.sleep(pace_s)
    stream.end_input()


async def test_stream_yields_the_audio_and_a_timed_transcript_of_every_character(stack):
    plugin = TTS(target=stack.gateway.addr, sample_rate=RATE)
    assert plugin.capabilities.streaming and plugin.capabilities.aligned_transcript
    frames: list[rtc.AudioFrame] = []
    timed: list[TimedString] = []
    events = []
    async with plugin.stream() as stream:
        forward = asyncio.create_task(push_llm(stream, REPLY))
        async for ev in stream:
            events.append(ev)
            frames.append(ev.frame)
            timed += ev.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])
        await forward
    await plugin.aclose()

    assert frames and all(f.sample_rate == RATE and f.num_channels == 1 for f in frames)
    assert len({ev.request_id for ev in events}) == 1 and len({ev.segment_id for ev in events}) == 1
    assert events[-1].is_final and not any(ev.is_final for ev in events[:-1])
    duration = sum(f.duration for f in frames)
    # every character once, in order, timed from the reply's first sample, within its audio
    assert "".join(timed) == REPLY
    assert all(isinstance(t, TimedString) for t in timed)
    starts = [t.start_time for t in timed]
    assert starts == sorted(starts) and starts[0] >= 0
    assert all(t.end_time >= t.start_time for t in timed) and timed[-1].end_time <= duration + 0.05
    # the times are the server's alignment of this text (the same request straight through our client)
    client = AsyncTTSClient(stack.gateway.addr)
    direct = client.open_stream(make_config(sample_rate=RATE, alignment=True))
    await direct.send_text(REPLY)
    await direct.end()
    alignment = [t async for ev in direct if isinstance(ev, Audio) for t in ev.timings]
    await client.close()
    assert [(t.text, round(t.start_ms), round(t.end_ms)) for t in alignment] == [
        (str(t), round(t.start_time * 1000), round(t.end_time * 1000)) for t in timed]
    # and each character comes with the frame its sound starts in, or an earlier one (never after its sound)
    frame_start, attached = 0.0, []
    for ev in events:
        attached += [(t.start_time, frame_start) for t in ev.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]
        frame_start += ev.frame.duration
    assert all(start >= at - 0.001 for start, at in attached), attached


async def test_aclose_mid_reply_cancels_synthesis_and_frees_the_decoder(stack, decoder_streams, stream_outcomes):
    plugin = TTS(target=stack.gateway.addr, sample_rate=RATE)
    before = stream_outcomes()
    stream = plugin.stream()
    forward = asyncio.create_task(push_llm(stream, LONG, pace_s=0.05))   # the LLM still generating
    first = await anext(aiter(stream))
    assert first.frame.duration > 0
    assert decoder_streams() == 1                  # the reply is being synthesized
    # the interruption: the session cancels the reply's tts task, which closes the stream
    forward.cancel()
    await stream.aclose()
    await asyncio.to_thread(wait_until, lambda: decoder_streams() == 0, 10, "the decoder to drop the reply")
    # the call was cancelled, not finished (the server did not go on to speak the text it had)
    await asyncio.to_thread(wait_until, lambda: stream_outcomes().get("cancelled", 0) == before.get("cancelled", 0) + 1,
                            10, "the gateway to count the call cancelled")
    assert stream_outcomes().get("ok", 0) == before.get("ok", 0)
    # the plugin (its channel) serves the next reply at once
    frames = []
    async with plugin.stream() as again:
        fwd = asyncio.create_task(push_llm(again, REPLY))
        async for ev in again:
            frames.append(ev.frame)
        await fwd
    await plugin.aclose()
    assert sum(f.duration for f in frames) > 2


def test_the_readme_example_runs(stack, tmp_path):
    """examples/livekit_tts.py (the README's), as a user runs it with this venv's Python."""
    out = tmp_path / "reply.wav"
    res = run_example(stack, tmp_path, "livekit_tts.py")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "".join(line.split()[-1] for line in res.stdout.splitlines()[:-1]) == "您好，这里是星河银行客服中心，请问有什么可以帮您？"
    with wave.open(str(out)) as w:
        assert w.getframerate() == RATE and w.getnframes() > 2 * RATE

"""Pipecat (pipecat-ai 1.14, its own venv): our StreamingTTSService in a real Pipecat pipeline against our real stack
on loopback. A scripted LLM streams a reply token by token, the user barges in while it plays, then a second reply.

The pipeline is what a bot runs minus the network: PipelineWorker / WorkerRunner, our TTS service, an output transport
(a BaseOutputTransport whose device plays at real time: a write returns once its audio has played), Pipecat's own
assistant context aggregator. The assertions are on the conversation context Pipecat keeps (only the characters
heard before the interruption, nothing after), on what the server says was heard, and on the one gRPC stream that
served both replies (its summary: 2 replies, 1 interruption)."""
from __future__ import annotations

import asyncio
import time
import wave

import pytest
from pipecat.frames.frames import (
    EndFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.tts_service import TextAggregationMode
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from tests.plugins.conftest import run_example
from tests.procs import wait_until
from tts_client.pipecat import StreamingTTSService

RATE = 24000
REPLY1 = ("您好，这里是星河银行客服中心。关于您咨询的信用卡账单，本期应还金额为三千二百元，最后还款日是本月二十五日。"
          "如果您需要办理分期，可以在手机银行里选择账单分期，手续费按期数计算。分期成功后，每期的还款金额会显示在账单上，"
          "您也可以随时提前还清剩余的本金。另外，本月您还有一笔消费积分即将到期，建议您尽快在积分商城兑换礼品。")
REPLY2 = "好的，马上为您转接人工服务，请稍候。"
HEARD_BEFORE_CUT = 12           # characters the user hears before barging in


class Player(BaseOutputTransport):
    """The bot's audio output: a device that plays at real time (each write returns when its audio has played)."""

    def __init__(self):
        super().__init__(TransportParams(audio_out_enabled=True, audio_out_sample_rate=RATE))
        self.audio = bytearray()
        self._until = 0.0

    async def start(self, frame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame) -> bool:
        now = time.monotonic()
        self._until = max(self._until, now) + len(frame.audio) / 2 / frame.sample_rate
        self.audio += frame.audio
        await asyncio.sleep(self._until - now)      # the device's pace
        return True


class Heard(FrameProcessor):
    """After the output: the words as the transport releases them (each when its audio plays)."""

    def __init__(self):
        super().__init__()
        self.words: list[str] = []
        self.changed = asyncio.Event()

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSTextFrame):
            self.words.append(frame.text)
            self.changed.set()
        await self.push_frame(frame, direction)

    async def wait_chars(self, n: int, timeout: float):
        async def reached():
            while len("".join(self.words)) < n:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(reached(), timeout)


def tokens(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


async def llm_reply(worker: PipelineWorker, text: str, pace_s: float = 0.1):
    """What an LLM service pushes for a reply: start, its tokens as they are generated (paced), end."""
    await worker.queue_frame(LLMFullResponseStartFrame())
    for tok in tokens(text):
        await worker.queue_frame(LLMTextFrame(tok))
        await asyncio.sleep(pace_s)
    await worker.queue_frame(LLMFullResponseEndFrame())


def assistant_messages(context: LLMContext) -> list[str]:
    out = []
    for m in context.get_messages():
        if m.get("role") == "assistant":
            c = m["content"]
            out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c))
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", [TextAggregationMode.TOKEN, TextAggregationMode.SENTENCE])
async def test_barge_in_keeps_only_the_heard_words_and_the_stream(stack, decoder_streams, stream_outcomes, mode):
    """TOKEN (the service's default): LLM tokens go to the server as they come; SENTENCE: Pipecat sends sentences."""
    before = stream_outcomes()
    tts = StreamingTTSService(target=stack.gateway.addr, text_aggregation_mode=mode)
    player, heard = Player(), Heard()
    context = LLMContext(messages=[{"role": "system", "content": "你是星河银行的客服。"}])
    aggregators = LLMContextAggregatorPair(context)
    pipeline = Pipeline([tts, player, heard, aggregators.assistant()])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_out_sample_rate=RATE), cancel_on_idle_timeout=False)

    started, turns_stopped = asyncio.Event(), []
    interruptions, closed, opened = [], [], []
    turn_stopped = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    @aggregators.assistant().event_handler("on_assistant_turn_stopped")
    async def _turn_stopped(aggregator, message):
        turns_stopped.append(message)
        turn_stopped.set()

    @tts.event_handler("on_connected")
    async def _opened(service):
        opened.append(service)

    @tts.event_handler("on_tts_interrupted")
    async def _interrupted(service, interruption):
        interruptions.append(interruption)

    @tts.event_handler("on_tts_stream_closed")
    async def _closed(service, summary):
        closed.append(summary)

    async def conversation():
        try:
            return await _conversation()
        except BaseException:
            await worker.cancel()                   # a failed check ends the pipeline too
            raise

    async def _conversation():
        await asyncio.wait_for(started.wait(), 60)
        # reply 1: streamed by the "LLM" (30 characters a second: still generating when the user barges in, once
        # some of it has been heard: the server is still synthesizing it)
        llm = asyncio.create_task(llm_reply(worker, REPLY1))
        await heard.wait_chars(HEARD_BEFORE_CUT, 60)
        assert not llm.done() and decoder_streams() == 1
        words_at_cut = len(heard.words)
        turn_stopped.clear()
        llm.cancel()                                # the LLM is interrupted too (as Pipecat's LLM services are)
        await worker.queue_frame(InterruptionFrame())
        await asyncio.wait_for(turn_stopped.wait(), 30)
        # the server answered the Cancel, and the decoder dropped the cut reply
        await asyncio.to_thread(wait_until, lambda: interruptions, 30, "the server's Interruption")
        await asyncio.to_thread(wait_until, lambda: decoder_streams() == 0, 30, "the decoder to free the cut reply")
        after_cut = heard.words[words_at_cut:]
        # reply 2, on the same stream
        turn_stopped.clear()
        await llm_reply(worker, REPLY2)
        await asyncio.wait_for(turn_stopped.wait(), 60)
        await worker.queue_frame(EndFrame())
        return after_cut

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    _, after_cut = await asyncio.gather(runner.run(), conversation())

    first, second = assistant_messages(context)
    cut = interruptions[0]
    print(f"context: {first!r} | {second!r}; server heard {cut.heard_text!r} at {cut.played_ms:.0f} ms")
    # the interrupted reply in the context: what was heard, a start of the reply, nothing after the cut
    assert turns_stopped[0].interrupted and not turns_stopped[1].interrupted
    assert REPLY1.startswith(first) and HEARD_BEFORE_CUT <= len(first) < len(REPLY1) // 2, (first, heard.words)
    # ... and the server's account of the same moment (characters whose sound had ended; the context may also hold
    # the one sounding then, and the punctuation after it)
    assert first.startswith(cut.heard_text) and len(first) - len(cut.heard_text) <= 3, (first, cut.heard_text)
    assert REPLY1.startswith(cut.heard_text + cut.unspoken_text)  # (the rest was never generated: the LLM was cut)
    assert all(w in REPLY2 for w in after_cut), after_cut          # no word of reply 1 was released after the cut
    # the next reply, whole, after it
    assert second == REPLY2
    # one gRPC stream served both: its summary counts two replies and the one cut
    assert len(opened) == 1 and len(closed) == 1 and closed[0] is not None
    summary = closed[0]
    assert (summary.replies, summary.interruptions) == (2, 1)
    assert summary.heard_chars == len(cut.heard_text) + len(REPLY2)
    after = stream_outcomes()                           # ... a call that ended normally, at the end of the bot
    assert [after.get(k, 0) - before.get(k, 0) for k in ("ok", "cancelled", "error")] == [1, 0, 0]
    # the device played what the bot said: the cut reply's first seconds, then all of reply 2
    played_s = len(player.audio) / 2 / RATE
    assert cut.played_ms / 1000 < played_s < summary.audio_ms / 1000 + 1


@pytest.mark.timeout(120)
async def test_a_stream_the_server_ended_is_replaced_at_the_next_turn(stack, stream_outcomes):
    """The gateway ends a stream that sends nothing for a while (TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S, here 10 s): a bot
    whose caller was silent that long speaks its next turn on a new stream, without an error. That turn has two
    sentences whose audio comes before the LLM's end: the context keeps both (Pipecat 1.14 released the end of such a
    turn after its first sentence)."""
    tts = StreamingTTSService(target=stack.gateway.addr)
    player, heard = Player(), Heard()
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context)
    worker = PipelineWorker(Pipeline([tts, player, heard, aggregators.assistant()]),
                            params=PipelineParams(audio_out_sample_rate=RATE), cancel_on_idle_timeout=False)
    started, turn_stopped, stream_closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    opened, closed, errors = [], [], []

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    @worker.event_handler("on_pipeline_error")
    async def _error(worker, frame):
        errors.append(frame)

    @aggregators.assistant().event_handler("on_assistant_turn_stopped")
    async def _turn_stopped(aggregator, message):
        turn_stopped.set()

    @tts.event_handler("on_connected")
    async def _opened(service):
        opened.append(service)

    @tts.event_handler("on_tts_stream_closed")
    async def _closed(service, summary):
        closed.append(summary)
        stream_closed.set()

    async def conversation():
        try:
            await asyncio.wait_for(started.wait(), 60)
            await llm_reply(worker, "您好，请问有什么可以帮您？")
            await asyncio.wait_for(turn_stopped.wait(), 60)
            turn_stopped.clear()
            await asyncio.wait_for(stream_closed.wait(), 60)     # the caller is silent; the gateway ends the stream
            await llm_reply(worker, "还在吗？我们继续。")
            await asyncio.wait_for(turn_stopped.wait(), 60)
            await worker.queue_frame(EndFrame())
        except BaseException:
            await worker.cancel()
            raise

    before = stream_outcomes()
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), conversation())
    assert assistant_messages(context) == ["您好，请问有什么可以帮您？", "还在吗？我们继续。"], heard.words
    assert len(opened) == 2 and closed[0] is None and closed[1] is not None and closed[1].replies == 1
    assert not errors
    after = stream_outcomes()                   # the first ended by the gateway (its idle error), the second normally
    assert [after.get(k, 0) - before.get(k, 0) for k in ("ok", "error")] == [1, 1]


def test_the_readme_example_runs(stack, tmp_path):
    """examples/pipecat_tts.py (the README's), as a user runs it with this venv's Python."""
    out = tmp_path / "reply.wav"
    res = run_example(stack, tmp_path, "pipecat_tts.py")
    assert res.returncode == 0, res.stderr[-3000:]
    words = [line.split()[-1] for line in res.stdout.splitlines() if " s  " in line]     # "  0.34 s  好"
    assert "".join(words) == "您好，这里是星河银行客服中心，请问有什么可以帮您？您的账单已经发送到手机上了。", res.stdout
    assert res.stdout.count("the stream:") == 1, res.stdout        # both on one stream
    with wave.open(str(out)) as w:
        assert w.getframerate() == RATE and w.getnframes() > 3 * RATE

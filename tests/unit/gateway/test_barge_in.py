"""Barge-in in the gateway (Pipeline.stream → replies.BargeIn) on in-process fake stages: a Cancel cuts the reply at
once (its calls cancelled, nothing of it after the answer), the Interruption says what was heard by the played
position, the next reply goes on in the same stream (same decoder, text and audio timelines continued), bad Cancels
are answered in-band and change nothing, and the summary counts replies, cuts, played audio and heard characters."""
from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import numpy as np
import pytest

from services.gateway.pipeline import FLUSH, CancelRequest, Pipeline, Plan
from tests.unit.gateway.fake_stages import RATE, FakeDecoder, FakeStages
from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2

CHAR_SAMPLES = 2400          # 100 ms of audio per character
UNTIMED = "“”"               # characters the fake engine gives no timing (as engines skip quotes)


def per_char(gate: asyncio.Semaphore | None = None):
    """A decoder that answers each segment as it reads it: one 100 ms chunk per normalized character, with that
    character's timing (marks silent) when the config asks for alignment; with a ``gate``, each chunk waits for a
    permit (the test says how much audio is sent)."""
    async def run(call):
        offset, wants = 0, False
        while True:
            before = len(call.received)
            await call.read(1)
            if len(call.received) == before:
                break
            req = call.received[-1]
            if req.WhichOneof("request") == "config":
                wants = req.config.alignment
                continue
            seg = req.segment
            for i, ch in enumerate(seg.normalized):
                if gate is not None:
                    await gate.acquire()
                timing = [decoder_pb2.Timing(span=frontend_pb2.Span(start=i, end=i + 1), start_sample=offset,
                                             end_sample=offset + CHAR_SAMPLES, silent=not ch.isalnum())
                          ] if ch not in UNTIMED else []
                yield decoder_pb2.DecodeResponse(chunk=decoder_pb2.AudioChunk(
                    pcm=np.full(CHAR_SAMPLES, 0.1, np.float32).tobytes(), sample_rate=RATE,
                    segment_index=seg.index, offset_samples=offset, num_samples=CHAR_SAMPLES,
                    segment_end=i == len(seg.normalized) - 1, alignment=timing if wants else ()))
                offset += CHAR_SAMPLES
        yield decoder_pb2.DecodeResponse(summary=decoder_pb2.DecodeSummary(engine="fake", voice="v"))
    return run


def make_plan(alignment=True, encoding="LINEAR16") -> Plan:
    return Plan(request_id="r1", tenant="t", engine="fake", voice_label="v",
                decode_config=decoder_pb2.DecodeConfig(engine="fake", request_id="r1", alignment=True),
                normalize_config=frontend_pb2.NormalizeConfig(language="zh", request_id="r1"),
                sample_rate=RATE, encoding=encoding, alignment=alignment)


class Client:
    """The client's side of one stream: ``send`` a message (a Cancel: and wait until the gateway has applied it),
    ``recv`` the next response. The responses are read as they come (as a gRPC client would)."""

    def __init__(self, stages, plan):
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.taken = asyncio.Event()
        pipe = Pipeline(SimpleNamespace(max_stream_seconds=60.0, stage_queue=2), stages, voices=None)
        self.task = asyncio.get_running_loop().create_task(self._pump(pipe.stream(plan, self._messages(), None)))

    async def _pump(self, responses):
        try:
            async for r in responses:
                self.outbox.put_nowait((r.WhichOneof("response"), getattr(r, r.WhichOneof("response"))))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.outbox.put_nowait(("error", exc))
        self.outbox.put_nowait(None)

    async def _messages(self):
        while True:
            msg = await self.inbox.get()
            if msg is None:
                return
            yield msg
            self.taken.set()          # runs when the gateway asks for the next message: this one was applied

    async def send(self, msg) -> None:
        self.taken.clear()
        self.inbox.put_nowait(msg)
        if isinstance(msg, CancelRequest):
            await self.taken.wait()

    async def recv(self):
        item = await self.outbox.get()
        assert item is not None, "the stream ended"
        return item

    async def rest(self) -> list:
        out = []
        while (item := await self.outbox.get()) is not None:
            out.append(item)
        await self.task
        return out


async def test_cancel_says_what_was_heard_and_the_next_reply_goes_on_in_the_same_stream():
    gate = asyncio.Semaphore(3)
    dec = FakeDecoder("a", per_char(gate), per_char())
    other = FakeDecoder("b")                                      # round-robin would pick it next: it must not be
    stages = FakeStages(dec, other)
    c = Client(stages, make_plan())
    await c.send("你好世界。")
    got = [await c.recv() for _ in range(3)]                       # 你 好 世: 300 ms sent
    assert [k for k, _ in got] == ["audio"] * 3
    assert [a.alignment[0].span.start for _, a in got] == [0, 1, 2]
    assert got[2][1].alignment[0].end_ms == pytest.approx(300)
    await c.send(CancelRequest(played_ms=250.0))                    # 好 ended at 200, 世 ends at 300
    kind, cut = await c.recv()
    assert kind == "interrupted"
    assert (cut.reply, cut.heard_text, cut.unspoken_text) == (0, "你好", "世界。")
    assert (cut.heard_span.start, cut.heard_span.end) == (0, 2)
    assert cut.sent_ms == pytest.approx(300) and cut.played_ms == 250 and cut.reply_start_ms == 0
    assert dec.calls[0].cancelled and stages.frontend.calls[0].cancelled     # its calls were cancelled at once
    await c.send("再见。")
    await c.send(None)
    rest = await c.rest()
    audio = [a for k, a in rest if k == "audio"]
    assert [k for k, _ in rest] == ["audio"] * 3 + ["summary"]
    assert {a.reply for a in audio} == {1}                        # nothing of the cut reply after the answer
    assert audio[0].offset_ms == pytest.approx(300)               # the stream's timeline goes on
    assert (audio[0].span.start, audio[0].span.end) == (5, 8)     # so does its text
    assert audio[0].segment_index == 1
    assert [e.span.start for a in audio for e in a.alignment] == [5, 6, 7]
    assert audio[0].alignment[0].start_ms == pytest.approx(300)
    assert len(dec.calls) == 2 and not other.calls                # the next reply went to the same decoder
    assert stages.open == {dec: 0, other: 0}
    s = rest[-1][1]
    assert (s.replies, s.interruptions, s.heard_chars) == (2, 1, 2 + 3)
    assert s.played_ms == pytest.approx(250 + 300)
    assert s.audio_ms == pytest.approx(600)


async def test_characters_without_a_timing_get_silent_entries_and_a_cut_inside_a_pause_hears_up_to_it():
    c = Client(FakeStages(FakeDecoder("a", per_char(asyncio.Semaphore(5)))), make_plan())
    await c.send("“好”，行")
    chunks = [(await c.recv())[1] for _ in range(5)]
    entries = [e for a in chunks for e in a.alignment]
    assert [(e.span.start, e.silent) for e in entries] == [(0, True), (1, False), (2, True), (3, True), (4, False)]
    # “ sits at the start of 好 (zero length), ” at its end, ， is the pause the fake voice makes (its own chunk)
    assert [(e.start_ms, e.end_ms) for e in entries] == [(100, 100), (100, 200), (200, 200), (300, 400), (400, 500)]
    assert [len(a.alignment) for a in chunks] == [0, 2, 0, 2, 1]  # an untimed character comes with the entry after it
    await c.send(CancelRequest(played_ms=350.0))                  # inside the comma's pause
    kind, cut = await c.recv()
    assert (kind, cut.heard_text, cut.unspoken_text) == ("interrupted", "“好”", "，行")
    await c.send(None)
    assert (await c.rest())[-1][1].heard_chars == 3


async def test_bad_cancels_are_answered_in_band_and_change_nothing():
    dec = FakeDecoder("a", per_char(asyncio.Semaphore(1)), per_char())
    c = Client(FakeStages(dec), make_plan())
    await c.send(CancelRequest(played_ms=0.0))                    # nothing sent yet
    kind, rej = await c.recv()
    assert (kind, rej.field, rej.code) == ("rejected", "cancel", 3)
    assert rej.message.startswith("cancel: nothing to cancel")
    await c.send("你好。")
    first = await c.recv()
    assert first[0] == "audio"
    for bad, field in ((-1.0, "cancel.played_ms"), (math.nan, "cancel.played_ms"), (math.inf, "cancel.played_ms"),
                       (100.5, "cancel.played_ms")):              # 100 ms were sent
        await c.send(CancelRequest(played_ms=bad))
        kind, rej = await c.recv()
        assert (kind, rej.field) == ("rejected", field), bad
        assert rej.message.startswith(field + ":")
    assert not dec.calls[0].cancelled                             # the reply went on
    await c.send(CancelRequest(played_ms=100.0))                  # exactly what was sent: accepted
    kind, cut = await c.recv()
    assert (kind, cut.heard_text) == ("interrupted", "你")
    await c.send(CancelRequest(played_ms=100.0))                  # twice, nothing new in between
    kind, rej = await c.recv()
    assert (kind, rej.field) == ("rejected", "cancel") and "since the last cancel" in rej.message
    await c.send("好的。")
    await c.send(None)
    rest = await c.rest()
    assert [a.reply for k, a in rest if k == "audio"] == [1, 1, 1]
    s = rest[-1][1]
    assert (s.replies, s.interruptions) == (2, 1)


async def test_a_reply_never_cut_counts_whole_and_alignment_is_only_sent_when_asked():
    c = Client(FakeStages(FakeDecoder("a", per_char())), make_plan(alignment=False))
    await c.send("你好。")
    await c.send(FLUSH)
    await c.send(None)
    rest = await c.rest()
    assert all(not a.alignment for k, a in rest if k == "audio")
    s = rest[-1][1]
    assert (s.replies, s.interruptions, s.heard_chars) == (1, 0, 3)
    assert s.played_ms == pytest.approx(300)


async def test_a_tone_held_by_the_codec_does_not_leak_into_the_next_reply():
    """MP3 (LAME holds about two frames): reply 0 is a loud tone cut after 100 ms; reply 1 is silence. Decoded with
    libsndfile, the next reply's file has no tone in it."""
    import io

    import soundfile as sf

    def tone():
        async def run(call):
            await call.read(2)
            t = np.arange(CHAR_SAMPLES) / RATE
            yield decoder_pb2.DecodeResponse(chunk=decoder_pb2.AudioChunk(
                pcm=(0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).tobytes(), sample_rate=RATE,
                segment_index=0, num_samples=CHAR_SAMPLES))
            await asyncio.Event().wait()                           # the rest never comes: it is cut
        return run

    def silence():
        async def run(call):
            await call.read()
            yield decoder_pb2.DecodeResponse(chunk=decoder_pb2.AudioChunk(
                pcm=np.zeros(RATE, np.float32).tobytes(), sample_rate=RATE, segment_index=0, num_samples=RATE,
                segment_end=True))
        return run

    c = Client(FakeStages(FakeDecoder("a", tone(), silence())), make_plan(encoding="MP3"))
    await c.send("啊")
    kind, first = await c.recv()
    assert kind == "audio"
    await c.send(CancelRequest(played_ms=first.duration_ms))
    assert (await c.recv())[0] == "interrupted"
    await c.send("嗯")
    await c.send(None)
    second = b"".join(a.audio for k, a in await c.rest() if k == "audio")
    audio, _ = sf.read(io.BytesIO(second), dtype="float32")
    assert len(audio) > RATE // 2
    assert float(np.abs(audio).max()) < 0.01

"""Barge-in through the real stack (tts_client's open_stream → gateway → frontend/decoder): a Cancel cuts the reply
(its Decode call ends: the decoder is idle again), nothing of it arrives after the Interruption, the next reply is
served on the same stream, bad Cancels are answered in-band and the stream goes on; alignment on the chunks."""
from __future__ import annotations

import grpc
import pytest

from tests.procs import wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.v1 import tts_pb2, tts_pb2_grpc
from tts_client import Audio, Done, Interrupted, Rejected
from tts_client.client import make_config

LONG = "".join(f"这是第{i}句话，我们正在测试语音合成服务。" for i in range(1, 9))


def decoder_streams(stack) -> int:
    with grpc.insecure_channel(stack.decoder.addr) as ch:
        info = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=5)
    return sum(e.active_streams for e in info.engines)


def test_cancel_cuts_the_reply_frees_the_decoder_and_the_next_reply_goes_on(stack, client):
    stream = client.open_stream(make_config(alignment=True), timeout=120)
    events = iter(stream)
    stream.send_text(LONG)
    stream.flush()
    first = next(events)
    assert isinstance(first, Audio) and first.reply == 0
    sent = first.chunk.offset_ms + first.chunk.duration_ms
    stream.cancel(sent / 2)
    after = []
    for ev in events:                                  # chunks already on their way, then the answer
        after.append(ev)
        if isinstance(ev, Interrupted):
            break
    cut = after[-1].interruption
    assert cut.reply == 0 and cut.played_ms == pytest.approx(sent / 2)
    assert cut.heard_text + cut.unspoken_text == LONG
    assert len(cut.heard_text) < len(LONG) / 2
    # Kokoro's timings are its own durations (not estimated); what was heard is what they say had sounded
    timings = [t for e in [first, *after] if isinstance(e, Audio) for t in e.timings]
    assert timings and not first.estimated
    heard = 0
    for t in timings:
        if t.end_ms > sent / 2:
            break
        heard = t.end
    assert cut.heard_text == LONG[:heard]
    # the decoder freed the cut reply's stream (its Decode call was cancelled) before any new text
    wait_until(lambda: decoder_streams(stack) == 0, 10, "the decoder to free the cut reply")
    stream.send_text("好的，再见。")
    stream.end()
    rest = list(events)
    audio = [e for e in rest if isinstance(e, Audio)]
    assert audio and {e.reply for e in audio} == {1}    # nothing of the cut reply after the answer
    assert audio[0].chunk.offset_ms == pytest.approx(cut.sent_ms)
    assert audio[0].chunk.span.start == len(LONG)
    done = rest[-1]
    assert isinstance(done, Done)
    s = done.summary
    assert (s.replies, s.interruptions) == (2, 1)
    assert s.heard_chars == len(cut.heard_text) + len("好的，再见。")
    assert s.played_ms == pytest.approx(sent / 2 - 0 + sum(e.chunk.duration_ms for e in audio), abs=1)


def test_bad_cancels_are_answered_in_the_stream_which_goes_on(stack, client):
    stream = client.open_stream(make_config(), timeout=120)
    events = iter(stream)
    stream.cancel(0)                                   # nothing to cancel yet
    ev = next(events)
    assert isinstance(ev, Rejected) and ev.field == "cancel" and ev.message.startswith("cancel: nothing to cancel")
    stream.send_text("您好，请问有什么可以帮您？")
    stream.flush()
    first = next(events)
    assert isinstance(first, Audio)
    for bad in (-1.0, 1e9, float("inf")):
        stream.cancel(bad)
    seen = []
    for ev in events:
        seen.append(ev)
        if sum(isinstance(e, Rejected) for e in seen) == 3:
            break
    rejected = [e for e in seen if isinstance(e, Rejected)]
    assert [e.field for e in rejected] == ["cancel.played_ms"] * 3
    assert all(e.message.startswith("cancel.played_ms:") for e in rejected)
    stream.end()
    rest = list(events)
    assert isinstance(rest[-1], Done) and rest[-1].summary.interruptions == 0
    assert all(e.reply == 0 for e in seen + rest if isinstance(e, Audio))


def test_cancel_before_the_config_is_invalid_argument(stack):
    def requests():
        yield tts_pb2.StreamingSynthesizeRequest(cancel=tts_pb2.Cancel(played_ms=0))

    with grpc.insecure_channel(stack.gateway.addr) as ch:
        with pytest.raises(grpc.RpcError) as err:
            list(tts_pb2_grpc.TextToSpeechStub(ch).StreamingSynthesize(requests(), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("cancel:")

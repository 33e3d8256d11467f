"""DecoderCall's replay and fail-over, with in-process fake decoder stubs (no servers, no sleeps): a stream the
first decoder refuses before answering moves to another with every request from the config on; once a decoder has
answered, a failure is final; a decoder that lacks a registered voice's prompt gets the stream again, once, with the
voice's full conditioning."""
from __future__ import annotations

import logging

import grpc
import pytest

from services.gateway.decoder_call import DecoderCall
from services.gateway.metrics import PROMPT_RESENDS
from services.gateway.pipeline import Plan
from shared.errors import TTSError
from tests.unit.gateway.fake_stages import FakeDecoder, FakeStages, feed, gather_later, refuse, rpc_error, speak
from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2

SEGMENTS = [frontend_pb2.Segment(index=i, text=f"第{i}句。") for i in range(3)]


def make_plan(full_speaker=None) -> Plan:
    cfg = decoder_pb2.DecodeConfig(engine="kokoro", request_id="r1", speed=1.0, tenant="t",
                                   speaker=decoder_pb2.SpeakerConditioning(reference_id="abc", encoder="enc@1"))
    return Plan(request_id="r1", tenant="t", engine="kokoro", voice_label="v_x", decode_config=cfg,
                normalize_config=frontend_pb2.NormalizeConfig(), sample_rate=24000, encoding="LINEAR16",
                metadata=(("x-request-id", "r1"),), full_speaker=full_speaker)


def expected_requests(config=None) -> list:
    return [decoder_pb2.DecodeRequest(config=config or make_plan().decode_config),
            *(decoder_pb2.DecodeRequest(segment=s) for s in SEGMENTS)]


async def run_call(stages, plan=None, limit=2):
    """Feed SEGMENTS while reading the responses (as the pipeline does); returns (call, responses, error)."""
    call = DecoderCall(stages, plan or make_plan(), lambda: 30.0, limit)
    producer = gather_later(feed(call, SEGMENTS))
    got, error = [], None
    try:
        async for resp in call.responses():
            got.append(resp)
    except TTSError as exc:
        error = exc
    finally:
        call.close()
        producer.cancel()
    return call, got, error


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
@pytest.mark.parametrize("after", [0, 2])
async def test_a_refusal_before_audio_replays_every_request_on_the_next_decoder(code, after, caplog):
    a = FakeDecoder("a", refuse(code, after=after))
    b = FakeDecoder("b", speak())
    stages = FakeStages(a, b)
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline"):
        call, got, error = await run_call(stages)
    assert error is None
    assert b.calls[0].received == expected_requests()          # from the config on, none lost, none twice
    assert [r.chunk.segment_index for r in got if r.WhichOneof("response") == "chunk"] == [0, 1, 2]
    assert got[-1].summary.voice == "b"
    assert call.tried == [a, b] and call.stub is b
    assert a.calls[0].cancelled
    assert "retrying on another decoder" in caplog.text
    assert stages.open == {a: 0, b: 0}                          # each +1 matched by a -1
    assert stages.cost == {a: 0.0, b: 0.5}                      # the speed report goes to the one that answered


async def test_the_stream_counts_on_the_decoder_it_runs_on():
    a = FakeDecoder("a", refuse(grpc.StatusCode.UNAVAILABLE))
    b = FakeDecoder("b", speak())
    stages = FakeStages(a, b)
    call = DecoderCall(stages, make_plan(), lambda: 30.0, 8)
    assert stages.open == {a: 1, b: 0}
    await feed(call, SEGMENTS)
    async for resp in call.responses():
        assert stages.open == {a: 0, b: 1}
    call.close()
    assert stages.open == {a: 0, b: 0}


async def test_a_failure_after_audio_is_not_retried():
    a = FakeDecoder("a", speak(fail_after=1))
    b = FakeDecoder("b", speak())
    _, got, error = await run_call(FakeStages(a, b))
    assert [r.chunk.segment_index for r in got] == [0]          # what the caller already has
    assert error is not None and error.code == grpc.StatusCode.UNAVAILABLE
    assert "decoder" in error.message
    assert b.calls == []


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND])
async def test_other_errors_are_not_retried(code):
    a = FakeDecoder("a", refuse(code))
    b = FakeDecoder("b", speak())
    _, got, error = await run_call(FakeStages(a, b))
    assert got == [] and error is not None and error.code == code
    assert b.calls == []


async def test_when_every_decoder_refuses_each_is_tried_once_and_the_last_error_returns():
    hint = (("retry-after-ms", "1500"),)
    a = FakeDecoder("a", refuse(grpc.StatusCode.UNAVAILABLE))
    b = FakeDecoder("b", refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, trailers=hint))
    stages = FakeStages(a, b)
    call, got, error = await run_call(stages)
    assert error is not None and error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.retry_after_s == pytest.approx(1.5)
    assert (len(a.calls), len(b.calls)) == (1, 1)
    assert stages.open == {a: 0, b: 0}


async def test_one_decoder_alone_is_not_retried():
    a = FakeDecoder("a", refuse(grpc.StatusCode.UNAVAILABLE))
    _, _, error = await run_call(FakeStages(a))
    assert error is not None and error.code == grpc.StatusCode.UNAVAILABLE
    assert len(a.calls) == 1


async def test_a_missing_voice_prompt_is_resent_once_with_the_full_conditioning():
    full = decoder_pb2.SpeakerConditioning(reference_id="abc", encoder="enc@1", embedding=[0.25, 0.5],
                                           prompt_pcm16k=b"\x01\x02")
    fetched = []

    async def full_speaker():
        fetched.append(1)
        return full

    a = FakeDecoder("a", refuse(grpc.StatusCode.NOT_FOUND), speak())
    b = FakeDecoder("b", speak())
    plan = make_plan(full_speaker)
    before = PROMPT_RESENDS._value.get()
    call, got, error = await run_call(FakeStages(a, b), plan)
    assert error is None and fetched == [1]
    assert b.calls == []                                       # the same decoder, now given the prompt
    config = decoder_pb2.DecodeConfig()
    config.CopyFrom(plan.decode_config)
    config.speaker.CopyFrom(full)
    assert a.calls[1].received == expected_requests(config)
    assert a.calls[0].cancelled
    assert PROMPT_RESENDS._value.get() == before + 1
    assert got[-1].summary.voice == "a"


async def test_a_second_missing_prompt_is_final():
    async def full_speaker():
        return decoder_pb2.SpeakerConditioning(reference_id="abc", embedding=[1.0])

    a = FakeDecoder("a", refuse(grpc.StatusCode.NOT_FOUND), refuse(grpc.StatusCode.NOT_FOUND))
    _, _, error = await run_call(FakeStages(a, FakeDecoder("b")), make_plan(full_speaker))
    assert error is not None and error.code == grpc.StatusCode.NOT_FOUND
    assert len(a.calls) == 2


async def test_once_the_decoder_answered_the_feed_keeps_nothing_it_has_read():
    a = FakeDecoder("a", speak())
    call = DecoderCall(FakeStages(a), make_plan(), lambda: 30.0, 8)
    await feed(call, SEGMENTS)
    async for _ in call.responses():
        break                                                  # the first answer
    assert call.feed.items == [None] * 4                       # the replay buffer is released
    call.close()



# ---- the admission probe: a caller no decoder would admit is refused at once, before its first segment -------------
async def test_the_probe_moves_the_stream_to_a_decoder_that_would_admit_it():
    a, b = FakeDecoder("a", admits=False), FakeDecoder("b", speak())
    stages = FakeStages(a, b)
    call = DecoderCall(stages, make_plan(), lambda: 30.0, 2)
    await call.admit()
    assert call.stub is b and (stages.open[a], stages.open[b]) == (0, 1)
    assert a.checks[0].tenant == "t" and a.checks[0].engine == "kokoro"
    call.close()


async def test_when_no_decoder_would_admit_it_the_caller_is_refused_before_any_decode_call():
    a, b = FakeDecoder("a", admits=False), FakeDecoder("b", admits=False)
    call = DecoderCall(FakeStages(a, b), make_plan(), lambda: 30.0, 2)
    with pytest.raises(TTSError) as err:
        await call.admit()
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.value.retry_after_s == 1.5
    assert err.value.message.startswith("decoder: capacity: kokoro engine:")
    assert not a.calls and not b.calls                   # nothing was opened, nothing held
    call.close()


async def test_a_decoder_that_does_not_answer_the_probe_is_left_to_the_decode_call():
    down = rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
    a, b = FakeDecoder("a", admits=down), FakeDecoder("b", admits=False)
    call = DecoderCall(FakeStages(a, b), make_plan(), lambda: 30.0, 2)
    await call.admit()                                   # no verdict: the Decode call will find out and move on
    assert call.stub is a
    call.close()

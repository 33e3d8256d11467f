"""Pipeline.run wired to in-process fake stages: the pumps (text → frontend → decoder feed, decoder → caller), the
fail-over seen from the caller, and the summary at the end."""
from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from services.gateway.pipeline import FLUSH, Pipeline, Plan
from shared.errors import TTSError
from tests.unit.gateway.fake_stages import CHUNK_SAMPLES, FakeDecoder, FakeStages, refuse, speak
from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2

PIECES = ["你好。", FLUSH, "今天天气很好。", "再见。"]


def make_plan(sample_rate=24000) -> Plan:
    return Plan(request_id="r1", tenant="t", engine="kokoro", voice_label="asked",
                decode_config=decoder_pb2.DecodeConfig(engine="kokoro", request_id="r1"),
                normalize_config=frontend_pb2.NormalizeConfig(language="zh", request_id="r1"),
                sample_rate=sample_rate, encoding="LINEAR16", metadata=(("x-request-id", "r1"),))


async def pieces(items):
    for item in items:
        yield item


async def synthesize(stages, plan=None, items=PIECES):
    pipe = Pipeline(SimpleNamespace(max_stream_seconds=60.0, stage_queue=2), stages, voices=None)
    seen = []
    out = []
    async for resp in pipe.run(plan or make_plan(), pieces(items), None, on_segment=seen.append):
        out.append(resp)
    return out, seen


async def test_text_reaches_the_decoder_as_segments_and_audio_comes_back_in_order():
    a = FakeDecoder("a", speak())
    stages = FakeStages(a)
    out, seen = await synthesize(stages)
    texts = [p for p in PIECES if p is not FLUSH]
    assert [s.text for s in seen] == texts
    sent = [r.segment.text for r in a.calls[0].received if r.WhichOneof("request") == "segment"]
    assert sent == texts
    assert stages.frontend.calls[0].config.language == "zh"
    chunks = [r.audio for r in out[:-1]]
    assert [c.segment_index for c in chunks] == [0, 1, 2]
    assert [c.segment_text for c in chunks] == texts
    assert [c.offset_ms for c in chunks] == [0, 100, 200]                  # 2400 samples at 24 kHz each
    assert all(len(c.audio) == CHUNK_SAMPLES * 2 for c in chunks)          # LINEAR16
    summary = out[-1].summary
    assert summary.audio_ms == pytest.approx(300)
    assert summary.segments == 3 and summary.tokens == 7
    assert summary.voice == "a"                   # what the decoder says it spoke, not what was asked
    assert summary.request_id == "r1"
    assert stages.open == {a: 0}
    assert stages.frontend.calls[0].cancelled


async def test_resampled_output_has_the_plans_rate():
    out, _ = await synthesize(FakeStages(FakeDecoder("a", speak())), make_plan(sample_rate=8000))
    assert {r.audio.sample_rate for r in out[:-1]} == {8000}
    assert out[-1].summary.audio_ms == pytest.approx(300, abs=5)


async def test_the_caller_gets_the_second_decoders_audio_when_the_first_is_down():
    a = FakeDecoder("a", refuse(grpc.StatusCode.UNAVAILABLE))
    b = FakeDecoder("b", speak())
    stages = FakeStages(a, b)
    out, _ = await synthesize(stages)
    assert [r.audio.segment_index for r in out[:-1]] == [0, 1, 2]
    assert out[-1].summary.voice == "b"
    assert stages.open == {a: 0, b: 0}


async def test_a_decoder_lost_after_audio_fails_the_stream():
    a = FakeDecoder("a", speak(fail_after=1))
    b = FakeDecoder("b", speak())
    with pytest.raises(TTSError) as exc:
        await synthesize(FakeStages(a, b))
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    assert b.calls == []


async def test_text_with_no_segment_is_invalid_and_opens_no_decoder_call():
    a = FakeDecoder("a")
    with pytest.raises(TTSError) as exc:
        await synthesize(FakeStages(a), items=[FLUSH])
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert a.calls == []

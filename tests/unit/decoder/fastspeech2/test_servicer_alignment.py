"""The decoder servicer puts an engine's per-chunk timings (samples from the chunk's first sample) on the Decode
stream's chunks in the stream's own timeline (``offset_samples``), only when ``DecodeConfig.alignment`` asks.
FastSpeech2 engine on its fake model (4 frames per symbol, tests/unit/decoder/fastspeech2/test_engine.py)."""
from __future__ import annotations

from services.decoder.server import DecoderServicer
from tests.unit.decoder.fastspeech2.test_engine import HELLO, HOP, LONG, engine_with
from tts.decoder.v1 import decoder_pb2
from tts.frontend.v1 import frontend_pb2


def to_proto(seg):
    return frontend_pb2.Segment(index=seg.index, text=seg.text, normalized=seg.normalized, words=[
        frontend_pb2.Word(text=w.text, lang=w.lang, pinyin=w.pinyin, span=frontend_pb2.Span(start=w.span[0],
                                                                                           end=w.span[1]))
        for w in seg.words])


async def decode(alignment: bool):
    eng = await engine_with()
    servicer = DecoderServicer({"fastspeech2": eng}, "fastspeech2")

    async def requests():
        yield decoder_pb2.DecodeRequest(config=decoder_pb2.DecodeConfig(alignment=alignment))
        for seg in (HELLO, LONG):
            yield decoder_pb2.DecodeRequest(segment=to_proto(seg))

    return [r.chunk async for r in servicer.Decode(requests(), None) if r.WhichOneof("response") == "chunk"]


async def test_timings_are_in_the_decode_streams_timeline():
    chunks = await decode(True)
    timings = [(c.segment_index, t.span.start, t.start_sample, t.end_sample, t.silent)
               for c in chunks for t in c.alignment]
    for c in chunks:                              # each starts in the chunk it comes with
        assert all(c.offset_samples <= t.start_sample < c.offset_samples + c.num_samples for t in c.alignment)
    # HELLO: 您 frames 4-16, 好 16-24, ，(the closing silence) 24-28; LONG starts after HELLO's 28 frames
    assert timings[:3] == [(0, 0, 4 * HOP, 16 * HOP, False), (0, 1, 16 * HOP, 24 * HOP, False),
                           (0, 2, 24 * HOP, 28 * HOP, True)]
    assert timings[3][:3] == (1, 0, 28 * HOP + 4 * HOP)
    assert [t[1] for t in timings if t[0] == 1] == list(range(len(LONG.normalized)))
    starts = [t[2] for t in timings]
    assert starts == sorted(starts)


async def test_no_timings_unless_asked():
    assert all(not c.alignment for c in await decode(False))

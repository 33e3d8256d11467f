"""Alignment and barge-in through the real stack on the FastSpeech2 engine (exact timings from its durations): a
cancel at a known played position hears exactly the characters whose sound ended by then; every character of the
text sent gets an entry, a stretch the text normalization read as a whole (9:45, 2026年) is one entry, marks the
engine gives no time (quotes, phoneme-mode markup) are silent and zero-length; the same from unary Synthesize."""
from __future__ import annotations

import grpc
import pytest

from tests.procs import make_stack, wait_until
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts_client import Audio, Done, Interrupted
from tts_client.client import make_config

GREETING = "您好，您的验证码是482913，请在5分钟内输入。"
MIXED = "今天是2026年1月13日，会议在9:45开始，地点是“A3”会议室。航班CA1234已经起飞，我用iPhone给你发了email。"
MARKUP = "我要[xie3]个字，{血|xie3}不能读错。"


@pytest.fixture(scope="module")
def fs2(tmp_path_factory):
    s = make_stack(tmp_path_factory.mktemp("fs2"), TTS_DECODER_ENGINES="fastspeech2",
                   TTS_DECODER_DEFAULT_ENGINE="fastspeech2", TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=10)
    yield s
    s.stop()


def decoder_streams(stack) -> int:
    with grpc.insecure_channel(stack.decoder.addr) as ch:
        info = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=5)
    return sum(e.active_streams for e in info.engines)


def pieces(text: str, n: int = 3):
    return [text[i:i + n] for i in range(0, len(text), n)]


def entries_of(text: str, config, client, streamed=True):
    res = client.stream(pieces(text) if streamed else [text], config)
    return [e for c in res.chunks for e in c.alignment], res


def check_coverage(text: str, entries) -> dict:
    """Every character of ``text`` in exactly one entry, in order, times never going back; → entries by text."""
    assert [(e.span.start, e.span.end) for e in entries] == sorted((e.span.start, e.span.end) for e in entries)
    pos = 0
    for e in entries:
        assert e.span.start == pos and e.span.end > e.span.start, (text[e.span.start:e.span.end], pos)
        pos = e.span.end
        assert e.end_ms >= e.start_ms
    assert pos == len(text)
    starts = [e.start_ms for e in entries]
    assert starts == sorted(starts)
    return {text[e.span.start:e.span.end]: e for e in entries}


@pytest.mark.parametrize("text, phoneme", [(MIXED, False), (MARKUP, True)], ids=["tn", "phoneme-mode"])
def test_every_character_has_an_entry_and_a_tn_stretch_is_one(fs2, text, phoneme):
    with fs2.client() as c:
        cfg = make_config(alignment=True, phoneme_mode=phoneme)
        streamed, res = entries_of(text, cfg, c)
        unary = c.synthesize(text, cfg)
    assert res.summary.engine == "fastspeech2"
    for entries in (streamed, list(unary.alignment)):
        by_text = check_coverage(text, entries)
        assert not any(e.silent for e in entries if text[e.span.start:e.span.end].isalnum()
                       and not text[e.span.start:e.span.end].isascii() or text[e.span.start:e.span.end] == "9:45")
        if text is MIXED:
            for whole in ("9:45", "2026", "CA1234"):        # one entry each: read as a whole by the TN
                assert whole in by_text, [text[e.span.start:e.span.end] for e in entries]
                assert not by_text[whole].silent and by_text[whole].end_ms - by_text[whole].start_ms > 300
            for quote in ("“", "”"):                         # no sound of their own: zero length, silent
                assert by_text[quote].silent and by_text[quote].start_ms == by_text[quote].end_ms
        else:                                               # an inline reading is one entry with its character
            assert not by_text["要[xie3]"].silent and not by_text["{血|xie3}"].silent
            assert by_text["要[xie3]"].end_ms > by_text["要[xie3]"].start_ms


def test_a_cancel_at_a_known_position_hears_exactly_what_had_sounded(fs2):
    with fs2.client() as c:
        for target, heard in (("，", "您好"), ("验", "您好，您的")):
            stream = c.open_stream(make_config(alignment=True), timeout=60)
            events = iter(stream)
            stream.send_text(GREETING)
            stream.flush()
            seen = []
            for ev in events:
                assert isinstance(ev, Audio)
                seen += ev.timings
                if any(t.text == target for t in seen):
                    break
            mark = next(t for t in seen if t.text == target)
            played = (mark.start_ms + mark.end_ms) / 2         # inside the comma's pause / inside 验
            stream.cancel(played)
            after = []
            for ev in events:
                after.append(ev)
                if isinstance(ev, Interrupted):
                    break
            cut = after[-1]
            assert isinstance(cut, Interrupted)
            assert cut.heard_text == heard and cut.interruption.unspoken_text == GREETING[len(heard):]
            wait_until(lambda: decoder_streams(fs2) == 0, 10, "the decoder to free the cut reply")
            stream.send_text("好的。")
            stream.end()
            rest = list(events)
            audio = [e for e in rest if isinstance(e, Audio)]
            assert audio and all(e.reply == 1 for e in audio)
            timings = [t for e in audio for t in e.timings]
            assert [t.text for t in timings] == ["好", "的", "。"]      # the next reply's text frame follows on
            assert timings[0].start == len(GREETING) and timings[0].start_ms >= cut.interruption.sent_ms
            assert isinstance(rest[-1], Done) and rest[-1].summary.heard_chars == len(heard) + 3


def test_ttsctl_prints_when_each_character_sounds(fs2, tmp_path, capsys):
    from tts_client.cli import main

    text = "您好，9:45见。"
    assert main(["--target", fs2.gateway.addr, "synth", text, "--stream", "--timestamps",
                 "--out", str(tmp_path / "a.wav")]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [cols[0] for cols in lines] == ["您", "好", "，", "9:45", "见", "。"]
    starts = [float(cols[1].split("–")[0]) for cols in lines]
    assert starts == sorted(starts) and all(cols[1].endswith(" ms") for cols in lines)
    assert [len(cols) > 2 and "silent" in cols[2] for cols in lines] == [False, False, True, False, False, True]


def test_ttsctl_synth_without_stream_is_unary_so_the_same_text_gives_the_same_audio(fs2, tmp_path, capsys):
    """`ttsctl synth TEXT` sends the whole text in one unary call: cut by the default schedule whatever the decoder's
    measured load (a one-piece StreamingSynthesize adapts to it: once the decoder is measured fast, this sentence came
    out in 2 segments instead of the first call's 3, so different audio); its timestamps come from the response."""
    import json
    import wave

    from tts_client import TTSClient
    from tts_client.cli import main

    text = "请您稍等，我帮您查询一下订单的物流信息。"
    client = TTSClient(fs2.gateway.addr)
    cfg = make_config(sample_rate=24000)
    client.stream(pieces(GREETING), cfg)                    # the decoder's speed is measured: streams adapt
    unary = client.synthesize(text, cfg)
    runs = []
    for k in range(2):
        out = tmp_path / f"{k}.wav"
        assert main(["--target", fs2.gateway.addr, "synth", text, "--timestamps", "--out", str(out)]) == 0
        captured = capsys.readouterr()
        summary = json.loads(captured.err.strip().splitlines()[-1])
        with wave.open(str(out)) as w:
            runs.append((w.readframes(w.getnframes()), summary["segments"], captured.out))
    pcm = unary.audio[44:] if unary.audio.startswith(b"RIFF") else unary.audio
    assert runs[0][0] == runs[1][0] == pcm and runs[0][1] == runs[1][1] == unary.summary.segments
    lines = [line.split("\t")[0] for line in runs[0][2].splitlines()]
    assert "".join(lines) == text

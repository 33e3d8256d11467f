"""What the caller learns about an utterance at its end: the SynthesisSummary, built from what the gateway saw
(first-chunk latency, audio sent, playback margin and stalls) and what the decoder reported (tokens, engine, the
voice it spoke)."""
from __future__ import annotations

import time

from shared.playback import PlaybackClock
from tts.v1 import tts_pb2

from .metrics import FIRST_CHUNK, RTF


class SummaryBuilder:
    """One per utterance; ``plan`` is its ``pipeline.Plan``. Times are ``time.perf_counter()`` seconds."""

    def __init__(self, plan, t_start: float):
        self.plan = plan
        self.t_start = t_start
        self.t_first_text: float | None = None
        self.t_first_segment: float | None = None
        self.first_latency: float | None = None
        self.synthesis_latency: float | None = None
        self.playback = PlaybackClock()
        self.decoder = None                  # the decoder's DecodeSummary, once it sent one

    def text_arrived(self) -> None:
        if self.t_first_text is None:
            self.t_first_text = time.perf_counter()

    def segment_ready(self) -> None:
        """The frontend cut a segment and it goes to the decoder now."""
        if self.t_first_segment is None:
            self.t_first_segment = time.perf_counter()

    def audio_sent(self, samples: int) -> None:
        """A chunk of ``samples`` (at the plan's rate) goes to the caller now."""
        now = time.perf_counter()
        if self.first_latency is None:
            self.first_latency = now - (self.t_first_text if self.t_first_text is not None else self.t_start)
            if self.t_first_segment is not None:
                self.synthesis_latency = now - self.t_first_segment
            FIRST_CHUNK.labels(self.plan.engine or "default").observe(self.first_latency)
        self.playback.deliver(now, samples / self.plan.sample_rate)

    def build(self, out_samples: int, segments: int) -> tts_pb2.SynthesisSummary:
        plan, dec, playback = self.plan, self.decoder, self.playback
        processing = time.perf_counter() - self.t_start
        audio_s = out_samples / plan.sample_rate
        rtf = processing / audio_s if audio_s else 0.0
        if audio_s:
            RTF.labels(plan.engine or "default").observe(rtf)
        return tts_pb2.SynthesisSummary(
            audio_ms=audio_s * 1000, first_chunk_latency_ms=(self.first_latency or 0) * 1000,
            tokens=dec.tokens if dec else 0, real_time_factor=rtf, segments=segments,
            processing_ms=processing * 1000, engine=dec.engine if dec else plan.engine,
            # what the decoder says it spoke, never what we asked for
            voice=dec.voice if dec and dec.voice else plan.voice_label,
            conditioning=dec.conditioning if dec else "", request_id=plan.request_id,
            min_playback_margin_ms=(playback.min_margin_s or 0.0) * 1000, stalls=playback.stalls,
            stall_ms=playback.stall_s * 1000, synthesis_first_chunk_ms=(self.synthesis_latency or 0) * 1000)

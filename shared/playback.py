"""The listener's side of one audio stream, as a server can observe it (used by the decoder's scheduler and the
gateway's stream summary; the benchmark applies the same model on the client side).

Playback starts with the first chunk; audio then plays continuously. A chunk that arrives after the audio before it
has finished playing is a stall of that length, and playback resumes with it. The margin is how much audio is still
queued to play (negative: a stall).
"""
from __future__ import annotations

STALL_MIN_S = 0.01          # a chunk later than this is counted as a stall (below: timer noise)


class PlaybackClock:
    def __init__(self):
        self.play_end: float | None = None   # when the audio delivered so far will have finished playing
        self.audio_s = 0.0
        self.stalls = 0
        self.stall_s = 0.0
        self.min_margin_s: float | None = None  # the smallest margin seen when a chunk arrived (after the first)

    @property
    def started(self) -> bool:
        return self.play_end is not None

    def margin(self, now: float) -> float | None:
        """Seconds of audio still queued to play at ``now`` (None before the first chunk)."""
        return None if self.play_end is None else self.play_end - now

    def stop(self) -> None:
        """The listener stopped playing (barge-in): the next chunk starts playback anew (the wait is no stall)."""
        self.play_end = None

    def deliver(self, now: float, seconds: float) -> float:
        """A chunk of ``seconds`` of audio arrives at ``now``; returns the stall it ended (0 if none)."""
        stall = 0.0
        if self.play_end is None:
            self.play_end = now + seconds
        else:
            margin = self.play_end - now
            if self.min_margin_s is None or margin < self.min_margin_s:
                self.min_margin_s = margin
            if margin < 0:
                stall = -margin
                self.stall_s += stall
                if stall > STALL_MIN_S:
                    self.stalls += 1
                self.play_end = now + seconds
            else:
                self.play_end += seconds
        self.audio_s += seconds
        return stall

"""The output encodings, in one place: tts.v1 ``AudioEncoding`` names → how to encode a stream of mono float32 PCM.

Every encoding is a streaming encoder: ``encode(pcm)`` returns the bytes that are ready now, ``finish()`` the rest
(trailing frames/pages). The concatenation of everything returned is a complete file of that format, except WAV,
whose streamed header cannot know the length (``complete_file`` rewrites it for unary answers).

Compressed formats use FFmpeg's encoders and muxers through PyAV (``av``, bundled FFmpeg: libopus, LAME, FLAC, AAC):
- OGG_OPUS: Ogg pages of 20 ms Opus packets (a page per packet, so each chunk carries every complete page; the last
  packet of a chunk — under 20 ms of audio — leaves in the next chunk or at the end). 32 kbit/s; sample rates
  8000, 12000, 16000, 24000, 48000 (Opus' own).
- MP3: MPEG audio frames (1152 samples, 576 at 24 kHz and below) as LAME emits them; the encoder holds back up to about
  two frames (look-ahead), which leave with the next chunk or at the end. 64 kbit/s (32 at 8 kHz).
- FLAC: FLAC frames; the streamed STREAMINFO says "length unknown" (valid FLAC; a stream is never seeked back).
- AAC: AAC-LC in ADTS frames (1024 samples), 64 kbit/s.
Adding an encoding = a value in tts.v1 ``AudioEncoding`` + an entry in ``ENCODINGS`` here (tests check both agree).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from .audio import SUPPORTED_OUTPUT_RATES, float_to_pcm16, mulaw_encode, wav_header


class Encoder:
    """Streaming encoder for one utterance at one sample rate."""

    def encode(self, pcm: np.ndarray) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""

    def discard(self) -> None:
        """Give up the stream: free the encoder; nothing more comes out of it."""


class _Pcm16(Encoder):
    def __init__(self, rate: int, header: bool = False):
        self._header = wav_header(rate) if header else b""

    def encode(self, pcm):
        head, self._header = self._header, b""
        return head + float_to_pcm16(pcm)

    def finish(self):
        head, self._header = self._header, b""
        return head


class _Mulaw(Encoder):
    def __init__(self, rate: int):
        pass

    def encode(self, pcm):
        return mulaw_encode(pcm)


class _Sink:
    """A non-seekable output for the muxer (so it never tries to seek back): collects what it writes."""

    def __init__(self):
        self.data = bytearray()

    def write(self, b) -> int:
        self.data += b
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class _AVEncoder(Encoder):
    """One FFmpeg encoder + muxer (PyAV) writing into memory; bytes are taken out after every chunk."""

    def __init__(self, rate: int, container: str, codec: str, bit_rate: int = 0, options: dict | None = None):
        import av   # imported here: only processes that produce compressed audio load FFmpeg

        self._av = av
        self._sink = _Sink()
        self._out = av.open(self._sink, "w", format=container, options=options or {})
        self._stream = self._out.add_stream(codec, rate=rate, layout="mono")
        if bit_rate:
            self._stream.bit_rate = bit_rate
        self._out.start_encoding()
        ctx = self._stream.codec_context
        # converts our float32 to the codec's sample format and cuts the codec's frame size
        self._framer = av.AudioResampler(format=ctx.format.name, layout="mono", rate=rate,
                                         frame_size=ctx.frame_size or None)
        self._rate, self._pts = rate, 0

    def _mux(self, frames) -> None:
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)

    def encode(self, pcm):
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        if len(pcm):
            frame = self._av.AudioFrame.from_ndarray(pcm[None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = self._rate, self._pts, Fraction(1, self._rate)
            self._pts += len(pcm)
            self._mux(self._framer.resample(frame))
        return self._sink.take()

    def finish(self):
        self._mux(self._framer.resample(None))       # the last, partial frame
        self._mux([None])                            # drain the encoder
        self._out.close()                            # trailer (last Ogg page with end-of-stream, ...)
        return self._sink.take()

    def discard(self):
        try:
            self._out.close()                        # what it still held is written to the sink and dropped
        except Exception:  # noqa: BLE001 - a half-fed muxer may complain on close; it is thrown away either way
            pass
        self._sink.take()


@dataclass(frozen=True)
class Encoding:
    name: str                                   # == the tts.v1 AudioEncoding value name
    mime: str                                   # HTTP Content-Type
    extension: str
    make: Callable[[int], Encoder]              # sample rate → a fresh streaming encoder
    rates: tuple[int, ...] = SUPPORTED_OUTPUT_RATES
    container: bool = False                     # compressed, in a container/frames (not raw samples)

    def complete_file(self, data: bytes, rate: int) -> bytes:
        """The whole streamed output as a file: the streamed WAV header gets its real lengths."""
        if self.name == "WAV":
            pcm = data[44:] if data.startswith(b"RIFF") else data
            return wav_header(rate, len(pcm) // 2) + pcm
        return data


OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

ENCODINGS: dict[str, Encoding] = {e.name: e for e in (
    Encoding("LINEAR16", "audio/pcm", "pcm", _Pcm16),
    Encoding("WAV", "audio/wav", "wav", lambda rate: _Pcm16(rate, header=True)),
    Encoding("MULAW", "audio/basic", "ulaw", _Mulaw, rates=(8000,)),
    Encoding("OGG_OPUS", "audio/ogg", "opus",
             lambda rate: _AVEncoder(rate, "ogg", "libopus", 32000, {"page_duration": "20000"}),
             rates=tuple(r for r in SUPPORTED_OUTPUT_RATES if r in OPUS_RATES), container=True),
    Encoding("MP3", "audio/mpeg", "mp3",
             lambda rate: _AVEncoder(rate, "mp3", "libmp3lame", 64000 if rate > 8000 else 32000), container=True),
    Encoding("FLAC", "audio/flac", "flac", lambda rate: _AVEncoder(rate, "flac", "flac"), container=True),
    Encoding("AAC", "audio/aac", "aac", lambda rate: _AVEncoder(rate, "adts", "aac", 64000), container=True),
)}


def encoding(name: str) -> Encoding:
    return ENCODINGS[name]

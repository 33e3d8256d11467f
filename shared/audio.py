"""Audio helpers: PCM conversions, mu-law, WAV headers, streaming resampling, decoding uploaded files."""
from __future__ import annotations

import io
import re
import struct

import numpy as np
import soxr

SUPPORTED_OUTPUT_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


def float_to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float32_bytes(audio: np.ndarray) -> bytes:
    return np.asarray(audio, dtype="<f4").tobytes()


def float32_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


_MULAW_BIAS = 0x84
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def mulaw_encode(audio: np.ndarray) -> bytes:
    """G.711 mu-law, 8 bits per sample (14-bit magnitude, bias 33, 8 segments), from 16-bit PCM."""
    pcm = np.frombuffer(float_to_pcm16(audio), dtype="<i2").astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 33
    seg = np.searchsorted(_SEG_END, mag)
    value = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return (value ^ mask).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return (np.where(sign != 0, -mag, mag) / 32768.0).astype(np.float32)


def wav_header(sample_rate: int, num_samples: int | None = None, bits: int = 16, fmt: int = 1) -> bytes:
    """RIFF/WAVE header for mono audio. ``num_samples=None`` (streaming: the length is not known yet) writes
    0xFFFFFFFF in both the RIFF and the data chunk size, the usual "unknown length" marker (ffmpeg, sox and libsndfile
    read to the end of the data; Python's ``wave`` takes it literally: 2^31-1 frames). Whoever saves a streamed WAV
    rewrites both sizes once it has everything (``Encoding.complete_file``, ttsctl)."""
    block = bits // 8
    if num_samples is None:
        data_len, riff_len = 0xFFFFFFFF, 0xFFFFFFFF
    else:
        data_len = num_samples * block
        riff_len = 36 + data_len
    return (b"RIFF" + struct.pack("<I", riff_len) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, fmt, 1, sample_rate, sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", data_len))


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    pcm = float_to_pcm16(audio)
    return wav_header(sample_rate, len(pcm) // 2) + pcm


def resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    if src_rate == dst_rate:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), src_rate, dst_rate, quality="HQ").astype(np.float32)


class StreamResampler:
    """Chunk-by-chunk resampling with state carried across chunks, so streamed audio has no seams."""

    def __init__(self, src_rate: int, dst_rate: int):
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._stream = None if src_rate == dst_rate else soxr.ResampleStream(src_rate, dst_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        if self._stream is None:
            return chunk
        return self._stream.resample_chunk(chunk, last=last)


class AudioEncoder:
    """Turns float32 chunks at ``src_rate`` into the client's encoding and rate, chunk by chunk (the encodings are
    in shared/encodings.py). ``encode(chunk, last=True)`` also returns what the encoder still held (trailing frames,
    the last Ogg page)."""

    def __init__(self, src_rate: int, dst_rate: int, encoding: str):
        from .encodings import ENCODINGS

        self.rate = dst_rate
        self.encoding = encoding
        self.src_rate = src_rate
        self._resampler = StreamResampler(src_rate, dst_rate)
        self._make = ENCODINGS[encoding].make
        self._container = ENCODINGS[encoding].container
        self._codec = self._make(dst_rate)
        self.samples_out = 0

    def restart(self) -> None:
        """Drop what the resampler and the codec hold and have not returned (the rest of audio that will never be
        sent: a barge-in). Raw encodings go on in the same stream (a WAV header that was not sent yet still comes
        first); a container encoding (Ogg, MP3, FLAC, ADTS) starts a new file: its next bytes begin with the
        container's headers, and nothing encoded before comes out after this."""
        self._resampler = StreamResampler(self.src_rate, self.rate)
        if self._container:
            self._codec.discard()
            self._codec = self._make(self.rate)

    def encode(self, chunk: np.ndarray, last: bool = False) -> tuple[bytes, int]:
        """Returns (bytes, number of output samples fed to the encoder)."""
        out = self._resampler(chunk, last=last)
        self.samples_out += len(out)
        data = self._codec.encode(out)
        if last:
            data += self._codec.finish()
        return data, len(out)


class AudioLimitError(ValueError):
    """The audio decodes to more than a limit allows (decoding stopped there); the text names the limit."""


DECODE_BLOCK_BYTES = 1024 * 1024       # one block of decoded samples, every channel (what decoding holds at a time)


def decode_audio(data: bytes, max_seconds: float | None = None,
                 max_decoded_bytes: int | None = None) -> tuple[np.ndarray, int]:
    """Decode WAV (any PCM/float width, ADPCM, GSM), FLAC, OGG/Vorbis/Opus, MP3 (what libsndfile opens) → (mono
    float32, rate), the channels averaged.

    Decoded in blocks of ``DECODE_BLOCK_BYTES``, each downmixed before the next is read, and stopped as soon as more
    than ``max_seconds`` of audio or ``max_decoded_bytes`` of float32 samples (every channel counted) came out: a
    compressed file of a few hundred KB can hold an hour of audio (gigabytes decoded), and nothing beyond the limits
    is ever held. Raises ``AudioLimitError`` naming the limit, or ValueError with a readable reason when the data
    cannot be decoded.
    """
    import soundfile as sf

    if not data:
        raise ValueError("audio is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            if rate <= 0 or channels <= 0:
                raise ValueError(f"cannot decode audio (sample rate {rate}, {channels} channels)")
            block = max(256, DECODE_BLOCK_BYTES // (4 * channels))
            max_frames = None if max_seconds is None else int(max_seconds * rate)
            parts, frames, decoded = [], 0, 0
            while True:
                chunk = f.read(block, dtype="float32", always_2d=True)
                if not len(chunk):
                    break
                frames += len(chunk)
                decoded += chunk.nbytes
                if max_frames is not None and frames > max_frames:
                    raise AudioLimitError(f"is longer than {max_seconds:g} s (the limit for the whole file, "
                                          "silence included; decoding stopped there)")
                if max_decoded_bytes is not None and decoded > max_decoded_bytes:
                    raise AudioLimitError(f"decodes to more than {max_decoded_bytes} bytes of samples (the limit; "
                                          f"{channels} channels at {rate} Hz, decoding stopped there)")
                # row by row, as a mean over the whole array: the same samples, so the same content hash
                parts.append(chunk[:, 0].copy() if channels == 1 else chunk.mean(axis=1).astype(np.float32))
    except ValueError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        reason = re.sub(r"^Error opening <[^>]*>:\s*", "", str(exc).strip()) or type(exc).__name__
        raise ValueError(f"cannot decode audio ({reason})") from None
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), rate

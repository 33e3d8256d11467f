"""shared/encodings.py: every output encoding, decoded by a decoder that is NOT the FFmpeg that encoded it —
libsndfile (soundfile: libogg + libopus for Ogg/Opus, mpg123 for MP3), Xiph's `flac` for FLAC, `faad` (FAAD2) for
AAC — and the streaming shape: every chunk is whole Ogg pages / whole MPEG frames, and most of a chunk's audio leaves
with that chunk."""
from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
import pytest
import soundfile as sf

from shared.audio import AudioEncoder
from shared.encodings import ENCODINGS
from tts.v1 import tts_pb2

RATE = 24000
CHUNKS_S = (0.13, 0.31, 0.05, 0.4, 0.22)       # uneven, like a decoder's chunks


def signal(rate: int = RATE) -> np.ndarray:
    t = np.arange(int(sum(CHUNKS_S) * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)


def encode_chunks(name: str, rate: int = RATE) -> tuple[list[bytes], np.ndarray]:
    x, enc, out, i = signal(rate), ENCODINGS[name].make(rate), [], 0
    for seconds in CHUNKS_S:
        n = int(seconds * rate)
        out.append(enc.encode(x[i:i + n]))
        i += n
    out.append(enc.encode(x[i:]) + enc.finish())
    return out, x


def decode_independently(name: str, data: bytes, tmp_path) -> tuple[np.ndarray, int]:
    if name in ("OGG_OPUS", "MP3"):
        y, rate = sf.read(io.BytesIO(data), dtype="float32")
        return y, rate
    src, out = tmp_path / f"in.{ENCODINGS[name].extension}", tmp_path / "out.wav"
    src.write_bytes(data)
    tool = {"FLAC": ["flac", "-d", "-s", "-f", "-o", str(out), str(src)],
            "AAC": ["faad", "-q", "-o", str(out), str(src)]}[name]
    assert shutil.which(tool[0]), f"{tool[0]} is missing: `make setup` installs it (Debian package)"
    res = subprocess.run(tool, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    y, rate = sf.read(out, dtype="float32", always_2d=True)
    return y[:, 0], rate          # FAAD2 may play a low-rate AAC-LC stream as implicit SBR: 2x rate, 2 channels


def aligned_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = 4000) -> tuple[float, int]:
    """Best correlation of y against x over the codec's delay (lossy codecs shift the signal by their look-ahead)."""
    best = (-1.0, 0)
    core = x[2000:len(x) - 4000]
    for lag in range(0, max_lag, 1):
        seg = y[2000 + lag:2000 + lag + len(core)]
        if len(seg) < len(core):
            break
        c = float(np.dot(core, seg) / (np.linalg.norm(core) * np.linalg.norm(seg) + 1e-9))
        if c > best[0]:
            best = (c, lag)
    return best


def test_every_api_encoding_has_an_encoder_and_every_encoder_an_api_value():
    api = {n for n in tts_pb2.AudioEncoding.keys() if n != "AUDIO_ENCODING_UNSPECIFIED"}
    assert api == set(ENCODINGS)
    for enc in ENCODINGS.values():
        assert enc.rates and enc.mime.startswith("audio/")


@pytest.mark.parametrize("name", ["OGG_OPUS", "MP3", "FLAC", "AAC"])
def test_compressed_output_decodes_to_the_signal_with_an_independent_decoder(name, tmp_path):
    chunks, x = encode_chunks(name)
    y, rate = decode_independently(name, b"".join(chunks), tmp_path)
    assert rate in (RATE, 48000)
    if rate != RATE:
        y = y[::rate // RATE]
    # nothing lost at the end (finish() drains the encoder) and no more than the codec's delay + one frame of padding
    assert len(x) - 10 <= len(y) <= len(x) + 2 * 1152 + 2048, (len(x), len(y))
    corr, lag = aligned_correlation(x, y)
    assert corr > (0.999 if name == "FLAC" else 0.95), (corr, lag)
    if name == "FLAC":
        assert lag == 0 and np.abs(y[:len(x)] - x).max() < 2 / 32768       # lossless (16-bit)


def _ogg_pages(data: bytes) -> list[tuple[int, int]]:
    """(granule position, page length) of each Ogg page; asserts the bytes are whole pages and nothing else."""
    pages, i = [], 0
    while i < len(data):
        assert data[i:i + 4] == b"OggS", f"no page starts at byte {i}"
        nseg = data[i + 26]
        body = sum(data[i + 27:i + 27 + nseg])
        length = 27 + nseg + body
        assert i + length <= len(data), "a chunk ends inside a page"
        pages.append((int.from_bytes(data[i + 6:i + 14], "little", signed=True), length))
        i += length
    return pages


def test_ogg_opus_chunks_are_whole_pages_and_carry_their_audio():
    chunks, _ = encode_chunks("OGG_OPUS")
    fed = 0
    for k, data in enumerate(chunks):
        pages = _ogg_pages(data)
        assert pages, f"chunk {k} carries no page"
        fed += int(CHUNKS_S[k] * RATE) if k < len(CHUNKS_S) else 0
        granule = max(g for g, _ in pages)       # 48 kHz samples up to the end of the last page sent so far
        if k < len(CHUNKS_S):
            # all but the chunk's last 20 ms packet (and the encoder's pre-skip) has left with the chunk
            assert granule >= fed * 2 - 960 - 312 * 2 - 960, (k, granule, fed * 2)


_MP3_KBPS = {1: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
             2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frames(data: bytes, skip_id3: bool) -> int:
    """Number of MPEG layer III frames; asserts the bytes are (an ID3v2 tag and) whole frames and nothing else."""
    i = 0
    if skip_id3 and data[:3] == b"ID3":
        i = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    frames = 0
    while i < len(data):
        h = int.from_bytes(data[i:i + 4], "big")
        assert h >> 21 == 0x7FF, f"no frame sync at byte {i}"
        version, layer = (h >> 19) & 3, (h >> 17) & 3
        assert layer == 1, "not layer III"
        kbps = _MP3_KBPS[1 if version == 3 else 2][(h >> 12) & 0xF]
        rate = _MP3_RATES[version][(h >> 10) & 3]
        length = (144 if version == 3 else 72) * kbps * 1000 // rate + ((h >> 9) & 1)
        assert i + length <= len(data), "a chunk ends inside a frame"
        i += length
        frames += 1
    return frames


def test_mp3_chunks_are_whole_frames_and_carry_their_audio():
    chunks, _ = encode_chunks("MP3")
    frames, fed = 0, 0
    for k, data in enumerate(chunks):
        frames += _mp3_frames(data, skip_id3=k == 0)
        if k < len(CHUNKS_S):
            fed += int(CHUNKS_S[k] * RATE)
            # 576 samples per frame at 24 kHz; LAME holds back its look-ahead (about two frames) + the Xing frame
            assert frames * 576 >= fed - 4 * 576, (k, frames, fed)


def test_audio_encoder_flushes_the_codec_on_the_last_call():
    enc = AudioEncoder(24000, 16000, "OGG_OPUS")
    body, n = enc.encode(signal())
    tail, m = enc.encode(np.zeros(0, np.float32), last=True)
    assert tail and b"OggS" in tail                 # the last page (end of stream) comes with the last call
    y, rate = sf.read(io.BytesIO(body + tail), dtype="float32")
    assert abs(len(y) * 16000 / rate - (n + m)) <= 2


def test_streamed_wav_header_says_unknown_and_the_completed_file_is_exact():
    enc = ENCODINGS["WAV"]
    chunks, x = encode_chunks("WAV")
    streamed = b"".join(chunks)
    assert streamed[4:8] == b"\xff\xff\xff\xff" and streamed[40:44] == b"\xff\xff\xff\xff"
    with wave.open(io.BytesIO(enc.complete_file(streamed, RATE))) as w:
        assert w.getnframes() == len(x) and w.getframerate() == RATE

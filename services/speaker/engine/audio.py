"""Reference audio → canonical 16 kHz mono PCM16 (trimmed), with validation that names what is wrong; and the same
stretch of audio resampled once from the source to 24 kHz (GLM-TTS computes its prompt mel from 24 kHz audio: going
through 16 kHz would lose the 7-8 kHz bands of the mel)."""
from __future__ import annotations

import numpy as np

from shared.audio import AudioLimitError, decode_audio, resample
from shared.errors import InvalidArgument
from shared.limits import (GOOD_REFERENCE_SPEECH_S, MAX_REFERENCE_DECODED_BYTES, MAX_REFERENCE_SPEECH_S,
                           MAX_REFERENCE_TOTAL_S, MIN_REFERENCE_SPEECH_S)

RATE = 16000
PROMPT_RATE = 24000                  # the glmtts flow's prompt mel rate
MIN_SPEECH_S, MAX_SPEECH_S = MIN_REFERENCE_SPEECH_S, MAX_REFERENCE_SPEECH_S
GOOD_MIN_S, GOOD_MAX_S = GOOD_REFERENCE_SPEECH_S
_BEST = f"{GOOD_MIN_S:g}-{GOOD_MAX_S:g} s"


def _trim_bounds(audio: np.ndarray, frame: int = 320, rel_db: float = -40.0, pad: int = 1600) -> tuple[int, int]:
    """[start, end) without the leading/trailing frames quieter than ``rel_db`` below the loudest frame (and below an
    absolute floor), keeping ``pad`` samples (100 ms) around the rest; (0, 0) when nothing is loud."""
    n = len(audio) // frame
    if n == 0:
        return 0, 0
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    threshold = max(rms.max() * 10 ** (rel_db / 20), 1e-3)
    loud = np.flatnonzero(rms > threshold)
    if len(loud) == 0:
        return 0, 0
    return max(0, loud[0] * frame - pad), min(len(audio), (loud[-1] + 1) * frame + pad)


def _trim(audio: np.ndarray, **kw) -> np.ndarray:
    start, end = _trim_bounds(audio, **kw)
    return audio[start:end]


def speech_problem(speech: np.ndarray, rate: int = RATE) -> str | None:
    """Why trimmed 16 kHz audio does not sound like speech, or None. Conservative: rejects white noise, steady
    tones/hum and sub-audio rumble; real recordings (even noisy ones at ~0 dB SNR) pass. Pink noise is not caught."""
    x = np.asarray(speech, dtype=np.float64)
    x = x - x.mean()
    frame = 400                                          # 25 ms
    n = len(x) // frame
    if n < 8:
        return None
    frames = x[: n * frame].reshape(n, frame)
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    loud = db > db.max() - 30
    power = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1 / rate)
    band = (freqs >= 80) & (freqs <= 4000)
    if power[:, band].sum() < 0.2 * power.sum():
        return "has almost no energy in the voice band (80 Hz-4 kHz); it does not sound like speech"
    if db[loud].std() < 1.5:
        return "is a steady sound (a tone, hum or noise) without the loudness changes of speech"
    p = power[loud][:, band] + 1e-12
    flatness = float(np.median(np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)))
    if flatness > 0.5:
        return f"sounds like noise, not speech (spectral flatness {flatness:.2f})"
    return None


def canonicalize(data: bytes, max_bytes: int) -> tuple[np.ndarray, list[str]]:
    pcm16, _, warnings = canonical(data, max_bytes)
    return pcm16, warnings


def canonical(data: bytes, max_bytes: int, max_decoded_bytes: int = MAX_REFERENCE_DECODED_BYTES
              ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(canonical 16 kHz PCM16, the same stretch as 24 kHz PCM16 resampled once from the source, warnings).

    Decoding stops at ``MAX_REFERENCE_TOTAL_S`` of audio or ``max_decoded_bytes`` of samples, whichever comes first
    (a compressed file can hold hours): what one call holds is bounded whatever the file claims."""
    if len(data) > max_bytes:
        raise InvalidArgument("audio", f"{len(data)} bytes is over the {max_bytes} byte limit")
    try:
        mono, rate = decode_audio(data, MAX_REFERENCE_TOTAL_S, max_decoded_bytes)
    except AudioLimitError as exc:
        raise InvalidArgument("audio", f"{exc}; send at most {MAX_SPEECH_S:.0f} s of speech") from None
    except ValueError as exc:
        raise InvalidArgument("audio", f"{exc}; send WAV, FLAC, OGG or MP3") from None
    if mono.size == 0:
        raise InvalidArgument("audio", "contains no samples")
    if not np.isfinite(mono).all():          # a NaN or infinity in any channel is one in the mean
        raise InvalidArgument("audio", "contains NaN or infinite samples")
    if np.mean(np.abs(mono) >= 0.999) > 0.05:
        raise InvalidArgument("audio", "is clipped (more than 5% of samples at full scale); record at a lower level")
    pcm = resample(mono, rate, RATE)
    start, end = _trim_bounds(pcm)
    speech = pcm[start:end]
    seconds = len(speech) / RATE
    if seconds == 0:
        raise InvalidArgument("audio", "is silence only")
    if seconds < MIN_SPEECH_S:
        raise InvalidArgument("audio", f"has {seconds:.2f} s of speech; at least {MIN_SPEECH_S:.0f} s is needed "
                              f"({_BEST} is best)")
    if seconds > MAX_SPEECH_S:
        raise InvalidArgument("audio", f"has {seconds:.1f} s of speech; at most {MAX_SPEECH_S:.0f} s ({_BEST} is best)")
    problem = speech_problem(speech)
    if problem:
        raise InvalidArgument("audio", problem)
    warnings = []
    if not GOOD_MIN_S <= seconds <= GOOD_MAX_S:
        warnings.append(f"{seconds:.1f} s of speech; {_BEST} gives the best voice clone")
    # canonical form: PCM16 resolution, so the content hash is stable
    speech = np.round(np.clip(speech, -1, 1) * 32767).astype(np.int16)
    pcm24 = resample(mono, rate, PROMPT_RATE)
    k = PROMPT_RATE / RATE
    pcm24 = pcm24[int(round(start * k)): int(round(start * k)) + int(round(len(speech) * k))]
    pcm24 = np.round(np.clip(pcm24, -1, 1) * 32767).astype(np.int16)
    return speech, pcm24, warnings

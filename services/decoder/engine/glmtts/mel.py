"""Log-mel features of the glmtts engine (the flow decoder's ``prompt_feat`` and the vocoder's input).

GLM-TTS's 24 kHz setting: 80 Slaney-scale, Slaney-normalised mel bands over 0–8 kHz of a 1920-point magnitude STFT
(Hann window 1920, hop 480 → 50 frames/s), the signal reflect-padded by (n_fft − hop)/2 on both sides and framed
without centring, magnitude ``sqrt(re² + im² + 1e-9)``, natural log after clamping at 1e-5.

Pure torch; the filterbank is built here (same construction as the usual Slaney/librosa default), so neither librosa
nor torchaudio is needed.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

SAMPLE_RATE = 24000
N_FFT = 1920
HOP_SIZE = 480
WIN_SIZE = 1920
NUM_MELS = 80
FMIN = 0.0
FMAX = 8000.0
LOG_FLOOR = 1e-5

# Slaney's auditory-toolbox mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic (27 mels per octave×log2 6.4)
_F_SP = 200.0 / 3
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    hz = hz.to(torch.float64)
    lin = hz / _F_SP
    log = _BREAK_MEL + torch.log(torch.clamp(hz, min=_BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return torch.where(hz >= _BREAK_HZ, log, lin)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    mel = mel.to(torch.float64)
    lin = mel * _F_SP
    log = _BREAK_HZ * torch.exp(_LOG_STEP * (mel - _BREAK_MEL))
    return torch.where(mel >= _BREAK_MEL, log, lin)


@lru_cache(maxsize=8)
def _filterbank_cpu(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    n_bins = n_fft // 2 + 1
    bin_hz = torch.arange(n_bins, dtype=torch.float64) * (sample_rate / n_fft)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(fmin))), float(hz_to_mel(torch.tensor(fmax))),
                                     num_mels + 2, dtype=torch.float64))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None] - lo) / (mid - lo)
    falling = (hi - bin_hz[None]) / (hi - mid)
    tri = torch.clamp(torch.minimum(rising, falling), min=0.0)          # [num_mels, n_bins]
    area_norm = 2.0 / (hi - lo)                                           # Slaney: constant energy per band
    return (tri * area_norm).to(torch.float32)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, num_mels: int = NUM_MELS,
                   fmin: float = FMIN, fmax: float | None = FMAX) -> torch.Tensor:
    """[num_mels, n_fft//2 + 1] float32 Slaney filterbank (``fmax=None`` → Nyquist)."""
    top = sample_rate / 2 if fmax is None else float(fmax)
    if not 0 <= fmin < top <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin} fmax={top} sr={sample_rate}")
    return _filterbank_cpu(int(sample_rate), int(n_fft), int(num_mels), float(fmin), top).clone()


_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _basis(device: torch.device, sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float,
           win_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = (str(device), sample_rate, n_fft, num_mels, fmin, fmax, win_size)
    hit = _cache.get(key)
    if hit is None:
        hit = (mel_filterbank(sample_rate, n_fft, num_mels, fmin, fmax).to(device),
               torch.hann_window(win_size, device=device))
        _cache[key] = hit
    return hit


def num_frames(num_samples: int, n_fft: int = N_FFT, hop_size: int = HOP_SIZE) -> int:
    """Frames ``mel_spectrogram`` gives for ``num_samples`` (= num_samples // 480 at the defaults)."""
    pad = (n_fft - hop_size) // 2
    return max(0, (num_samples + 2 * pad - n_fft) // hop_size + 1)


def mel_spectrogram(wav: torch.Tensor, *, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                    num_mels: int = NUM_MELS, hop_size: int = HOP_SIZE, win_size: int = WIN_SIZE,
                    fmin: float = FMIN, fmax: float | None = FMAX) -> torch.Tensor:
    """wav [B, N] (or [N]) float in [-1, 1] at ``sample_rate`` → natural-log mel [B, num_mels, N // hop] (float32).

    Needs ``N > (n_fft - hop)/2`` samples (720 at the defaults) for the reflect padding.
    """
    if not isinstance(wav, torch.Tensor):
        wav = torch.as_tensor(wav)
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"wav must be [B, N] or [N], got shape {tuple(wav.shape)}")
    wav = wav.to(torch.float32)
    pad = (n_fft - hop_size) // 2
    if wav.shape[1] <= pad:
        raise ValueError(f"wav too short: {wav.shape[1]} samples, need more than {pad}")
    fb, window = _basis(wav.device, sample_rate, n_fft, num_mels, float(fmin),
                        float(sample_rate / 2 if fmax is None else fmax), win_size)
    x = F.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(x, n_fft, hop_length=hop_size, win_length=win_size, window=window, center=False,
                      normalized=False, onesided=True, return_complex=True)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(fb, mag), min=LOG_FLOOR))

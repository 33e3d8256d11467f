"""Prompt-mel extractor of the glmtts engine (GLM-TTS 24 kHz settings)."""
from __future__ import annotations

import math

import pytest
import torch

from services.decoder.engine.glmtts import mel as M


def _sine(hz: float, seconds: float, sr: int = 24000, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * hz * t)).to(torch.float32)


def test_frames_count():
    for n in (721, 960, 24000, 24000 + 479, 24000 + 480, 36123):
        out = M.mel_spectrogram(torch.zeros(2, n) + 0.01 * torch.randn(2, n))
        assert out.shape == (2, 80, n // 480) == (2, 80, M.num_frames(n)), n
        assert out.dtype == torch.float32


def test_1d_input_and_silence_floor():
    out = M.mel_spectrogram(torch.zeros(4800))
    assert out.shape == (1, 80, 10)
    # silence: sqrt(1e-9) per bin through the filterbank, far below 1e-5 → log floor
    assert torch.allclose(out, torch.full_like(out, math.log(M.LOG_FLOOR)))


def _band_centres() -> torch.Tensor:
    top = float(M.hz_to_mel(torch.tensor(M.FMAX)))
    return M.mel_to_hz(torch.linspace(0.0, top, M.NUM_MELS + 2))[1:-1]     # Hz at each triangle's apex


def test_sine_peaks_in_its_band():
    centres = _band_centres()
    for hz, band in ((440.0, 11), (3000.0, 54)):
        out = M.mel_spectrogram(_sine(hz, 0.5))
        energy = out[0, :, 2:-2].mean(-1)
        peak = int(energy.argmax())
        assert peak == int((centres - hz).abs().argmin()) == band, (hz, peak)
        assert energy[peak] > energy.median() + 5                          # far above the other bands (log scale)
    # 440 Hz lies on the linear part of the Slaney scale: apexes every 37.24 Hz, band 11 at 446.9 Hz
    assert abs(float(centres[11]) - 446.87) < 0.01


def test_filterbank_properties():
    fb = M.mel_filterbank()
    assert fb.shape == (80, 961) and fb.dtype == torch.float32
    assert (fb >= 0).all() and fb[:, 640:].abs().max() == 0               # nothing at or above 8 kHz (bin 640)
    # Slaney normalisation: each triangle's area over Hz is 1 (FFT bins are 24000/1920 = 12.5 Hz apart)
    areas = fb.double().sum(-1) * (24000 / 1920)
    assert torch.allclose(areas, torch.ones(80, dtype=torch.float64), atol=0.01)


def test_filterbank_matches_torchaudio_slaney():
    ta = pytest.importorskip("torchaudio.functional")
    ref = ta.melscale_fbanks(961, 0.0, 8000.0, 80, 24000, norm="slaney", mel_scale="slaney").T
    assert torch.allclose(M.mel_filterbank(), ref, atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="too short"):
        M.mel_spectrogram(torch.zeros(1, 700))
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        M.mel_spectrogram(torch.zeros(1, 1, 4800))

"""The Baker voice's two networks in PyTorch, as TensorFlowTTS builds them (inference mode).

- :class:`FastSpeech2`: phoneme ids → mel (80 bins, 12.5 ms frames). Split at the length regulator so that each
  half has only a sequence dimension (this is also what the ONNX export holds): :meth:`FastSpeech2.encode` (embeddings,
  encoder FFT blocks, duration/f0/energy predictors, f0/energy embeddings) and :meth:`FastSpeech2.decode` (position
  rows added, decoder FFT blocks over the regulated sequence, mel projection, postnet); :func:`regulate` repeats
  between them.
- :class:`MBMelGAN`: mel → 4 sub-band signals at 6 kHz (reflection pads, transposed-conv upsampling ×3×5×5,
  residual stacks with dilations 1, 3, 9, 27, tanh); :class:`PQMFSynthesis` joins them into 24 kHz audio;
  :func:`int8_step` is the shipped graph's int8 rounding of the sub-bands before synthesis (optional).

The Baker model has one speaker, so TensorFlowTTS builds no speaker embedding (the graph's ``speaker_ids`` input is
read by nothing); dropout is off, including the two the tflite graph leaves on at inference (f0/energy embeddings).
Shapes and hyper-parameters come from the weights (:mod:`.graph_weights` reads them out of the tflite graphs).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# FastSpeech2 ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FS2Config:
    vocab: int = 219
    hidden: int = 256
    heads: int = 2
    head_size: int = 16
    intermediate: int = 1024
    ffn_kernel: int = 3
    encoder_layers: int = 3
    decoder_layers: int = 3
    predictor_filters: int = 256
    predictor_kernel: int = 3
    variant_embedding_kernel: int = 9
    mels: int = 80
    postnet_layers: int = 5
    postnet_filters: int = 512
    postnet_kernel: int = 5
    positions: int = 2049          # rows of the sinusoid table: row 0 is padding, positions 1…2048
    layer_norm_eps: float = 1e-5


class SelfAttention(nn.Module):
    """Multi-head self-attention + output projection + residual + LayerNorm (TFFastSpeechAttention)."""

    def __init__(self, c: FS2Config):
        super().__init__()
        inner = c.heads * c.head_size
        self.heads, self.head_size = c.heads, c.head_size
        self.query = nn.Linear(c.hidden, inner)
        self.key = nn.Linear(c.hidden, inner)
        self.value = nn.Linear(c.hidden, inner)
        self.dense = nn.Linear(inner, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape

        def split(y):
            return y.view(b, t, self.heads, self.head_size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_size ** -0.5)
        if bias is not None:
            scores = scores + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, -1)
        return self.norm(self.dense(ctx) + x)


def conv_same(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Conv1d over (B, T, C) with TensorFlow's "same" padding (odd kernels: (k-1)/2 on each side)."""
    return conv(x.transpose(1, 2)).transpose(1, 2)


class FFTBlock(nn.Module):
    """TFFastSpeechLayer: attention, then conv(k) → mish → conv(k), residual, LayerNorm; masked after each part."""

    def __init__(self, c: FS2Config):
        super().__init__()
        self.attention = SelfAttention(c)
        pad = (c.ffn_kernel - 1) // 2
        self.conv1 = nn.Conv1d(c.hidden, c.intermediate, c.ffn_kernel, padding=pad)
        self.conv2 = nn.Conv1d(c.intermediate, c.hidden, c.ffn_kernel, padding=pad)
        self.norm = nn.LayerNorm(c.hidden, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        a = self.attention(x, bias)
        if mask is not None:
            a = a * mask
        y = conv_same(F.mish(conv_same(a, self.conv1)), self.conv2)
        if mask is not None:
            y = y * mask
        y = self.norm(y + a)
        return y * mask if mask is not None else y


class VariancePredictor(nn.Module):
    """TFFastSpeechVariantPredictor: 2 × (conv → ReLU → LayerNorm), then a dense layer to one value per id."""

    def __init__(self, c: FS2Config):
        super().__init__()
        pad = (c.predictor_kernel - 1) // 2
        self.convs = nn.ModuleList([nn.Conv1d(c.hidden if i == 0 else c.predictor_filters, c.predictor_filters,
                                              c.predictor_kernel, padding=pad) for i in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(c.predictor_filters, eps=c.layer_norm_eps) for _ in range(2)])
        self.out = nn.Linear(c.predictor_filters, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = norm(torch.relu(conv_same(x, conv)))
        return (self.out(x) * mask).squeeze(-1)


class Postnet(nn.Module):
    """Tacotron-2 postnet (conv + BatchNorm folded to scale/shift, tanh on all but the last)."""

    def __init__(self, c: FS2Config):
        super().__init__()
        dims = [c.mels] + [c.postnet_filters] * (c.postnet_layers - 1) + [c.mels]
        pad = (c.postnet_kernel - 1) // 2
        self.convs = nn.ModuleList([nn.Conv1d(dims[i], dims[i + 1], c.postnet_kernel, padding=pad)
                                    for i in range(c.postnet_layers)])
        for i, d in enumerate(dims[1:]):
            self.register_buffer(f"bn_scale{i}", torch.ones(d))
            self.register_buffer(f"bn_shift{i}", torch.zeros(d))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.transpose(1, 2)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x) * getattr(self, f"bn_scale{i}")[:, None] + getattr(self, f"bn_shift{i}")[:, None]
            if i < last:
                x = torch.tanh(x)
        return x.transpose(1, 2)


def round_durations(log_durations: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
    """Frames per id as the graph computes them: round(relu(exp(d) - 1) · speed), rounding half to even (TF's
    ``round``), as int64. ``speed`` multiplies durations (1.25 → 25 % more frames)."""
    return torch.round(torch.relu(torch.exp(log_durations) - 1.0) * speed).to(torch.int64)


class FastSpeech2(nn.Module):
    def __init__(self, c: FS2Config = FS2Config()):
        super().__init__()
        self.config = c
        self.char_embeddings = nn.Embedding(c.vocab, c.hidden)
        self.register_buffer("positions", torch.zeros(c.positions, c.hidden))   # shared by encoder and decoder
        self.encoder = nn.ModuleList([FFTBlock(c) for _ in range(c.encoder_layers)])
        self.duration_predictor = VariancePredictor(c)
        self.f0_predictor = VariancePredictor(c)
        self.energy_predictor = VariancePredictor(c)
        pad = (c.variant_embedding_kernel - 1) // 2
        self.f0_embeddings = nn.Conv1d(1, c.hidden, c.variant_embedding_kernel, padding=pad)
        self.energy_embeddings = nn.Conv1d(1, c.hidden, c.variant_embedding_kernel, padding=pad)
        self.decoder = nn.ModuleList([FFTBlock(c) for _ in range(c.decoder_layers)])
        self.mel_dense = nn.Linear(c.hidden, c.mels)
        self.postnet = Postnet(c)

    def encode(self, ids: torch.Tensor, speed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                        torch.Tensor]:
        """ids (1, N) int64 with the trailing eos, speed (1,) float32 → (hidden (1, N, H) with the f0 and energy
        embeddings added, durations (1, N) int64, f0 (1, N), energy (1, N)). Id 0 (``pad``) is masked out as in
        the graph."""
        n = ids.shape[1]
        mask = (ids != 0).to(torch.float32)[:, :, None]                       # (1, N, 1)
        bias = ((1.0 - mask.transpose(1, 2)) * -1e9)[:, None]                  # (1, 1, 1, N): keys only
        x = self.char_embeddings(ids) + self.positions[1:n + 1][None]
        for layer in self.encoder:
            x = layer(x, mask, bias)
        masked = x * mask
        durations = round_durations(self.duration_predictor(masked, mask), speed)
        f0 = self.f0_predictor(masked, mask)                 # f0_ratios = 1
        energy = self.energy_predictor(masked, mask)         # energy_ratios = 1
        f0_emb = self.f0_embeddings(f0[:, None, :]).transpose(1, 2)
        energy_emb = self.energy_embeddings(energy[:, None, :]).transpose(1, 2)
        return x + (f0_emb + energy_emb), durations, f0, energy

    def decode(self, regulated: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """regulated (1, T, H) (the encoder states repeated by duration) and positions (1, T, H) (rows 1…T of the
        position table, :meth:`decoder_positions`) → (mel_before, mel_after), each (1, T, 80)."""
        x = regulated + positions
        for layer in self.decoder:
            x = layer(x, None, None)
        before = self.mel_dense(x)
        return before, self.postnet(before) + before

    def decoder_positions(self, frames: int) -> torch.Tensor:
        """Rows 1…frames of the stored position table, (1, frames, H); longer than the table is an error here
        (the runtime extends the table with :func:`quantized_sinusoids`)."""
        if frames >= self.positions.shape[0]:
            raise ValueError(f"{frames} frames: the position table holds {self.positions.shape[0] - 1}")
        return self.positions[1:frames + 1][None]


def regulate(hidden: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """The length regulator: each id's state repeated ``durations`` times, (1, N, H) → (1, sum, H)."""
    return torch.repeat_interleave(hidden, durations[0], dim=1)


def sinusoid_table(rows: int, dims: int) -> np.ndarray:
    """TensorFlowTTS's position table in float32: pos / 10000^(2⌊i/2⌋/dims), sin on even i, cos on odd i, row 0
    zero."""
    pos = np.arange(rows, dtype=np.float64)[:, None]
    i = np.arange(dims)[None, :]
    angle = pos / np.power(10000, 2.0 * (i // 2) / dims)
    table = np.where(i % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)
    table[0] = 0.0
    return table


def quantized_sinusoids(rows: int, dims: int, scale: float) -> np.ndarray:
    """The position table as the graph stores it: the float32 sinusoids quantized to int8 with ``scale`` (round
    half away from zero, ±127) and dequantized. Reproduces the stored 2049 rows exactly (a test checks), so the
    rows past them — utterances over 2048 frames, 25.6 s — are what the same conversion would have stored."""
    x = sinusoid_table(rows, dims) / np.float32(scale)
    q = np.clip(np.sign(x) * np.floor(np.abs(x) + np.float32(0.5)), -127, 127)
    return (q * np.float32(scale)).astype(np.float32)


# Multi-band MelGAN ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MelGANConfig:
    mels: int = 80
    filters: int = 384
    kernel: int = 7
    upsample: tuple[int, ...] = (3, 5, 5)
    dilations: tuple[int, ...] = (1, 3, 9, 27)
    stack_kernel: int = 3
    subbands: int = 4
    taps: int = 62
    alpha: float = 0.2               # LeakyReLU slope
    quant_scale: float = 1 / 128     # the shipped graph's int8 step on the sub-bands

    @property
    def hop(self) -> int:
        return int(np.prod(self.upsample)) * self.subbands


class ResidualStack(nn.Module):
    """leaky → reflect pad → dilated conv(k) → leaky → conv(1), plus a 1×1 shortcut."""

    def __init__(self, channels: int, kernel: int, dilation: int, alpha: float):
        super().__init__()
        self.pad = (kernel - 1) // 2 * dilation
        self.alpha = alpha
        self.conv1 = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)
        self.shortcut = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(F.leaky_relu(x, self.alpha), (self.pad, self.pad), mode="reflect")
        y = self.conv2(F.leaky_relu(self.conv1(y), self.alpha))
        return self.shortcut(x) + y


class Upsample(nn.Module):
    """TF Conv2DTranspose(kernel 2s, stride s, "same") over time: output exactly T·s, the uneven crop of the
    full transposed convolution taken as TensorFlow does (⌊s/2⌋ before, the rest after)."""

    def __init__(self, cin: int, cout: int, scale: int):
        super().__init__()
        self.scale = scale
        self.conv = nn.ConvTranspose1d(cin, cout, 2 * scale, stride=scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        y = self.conv(x)
        start = self.scale // 2
        return y[..., start:start + t * self.scale]


class MBMelGAN(nn.Module):
    """mel (B, T, 80) → sub-bands (B, 4, T·75), tanh-bounded."""

    def __init__(self, c: MelGANConfig = MelGANConfig()):
        super().__init__()
        self.config = c
        self.pad = (c.kernel - 1) // 2
        self.first = nn.Conv1d(c.mels, c.filters, c.kernel)
        ch = c.filters
        self.ups = nn.ModuleList()
        self.stacks = nn.ModuleList()
        for i, s in enumerate(c.upsample):
            out = c.filters // 2 ** (i + 1)
            self.ups.append(Upsample(ch, out, s))
            self.stacks.append(nn.ModuleList([ResidualStack(out, c.stack_kernel, d, c.alpha) for d in c.dilations]))
            ch = out
        self.last = nn.Conv1d(ch, c.subbands, c.kernel)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        a = self.config.alpha
        x = self.first(F.pad(mel.transpose(1, 2), (self.pad, self.pad), mode="reflect"))
        for up, stacks in zip(self.ups, self.stacks):
            x = up(F.leaky_relu(x, a))
            for stack in stacks:
                x = stack(x)
        x = F.pad(F.leaky_relu(x, a), (self.pad, self.pad), mode="reflect")
        return torch.tanh(self.last(x))

    def min_frames(self) -> int:
        """The fewest mel frames every reflection pad accepts (each needs more samples than it pads)."""
        c = self.config
        need = self.pad + 1
        rate = 1
        for s in c.upsample:
            rate *= s
            widest = (c.stack_kernel - 1) // 2 * max(c.dilations)
            need = max(need, -(-(widest + 1) // rate))
        return max(need, -(-(self.pad + 1) // rate))


def int8_step(subbands: torch.Tensor, scale: float) -> torch.Tensor:
    """The shipped vocoder's QUANTIZE/DEQUANTIZE pair on the sub-bands: round(x/scale) (half to even) clamped to
    int8, times scale."""
    return torch.clamp(torch.round(subbands / scale), -128, 127) * scale


class PQMFSynthesis(nn.Module):
    """Sub-bands (B, K, L) → audio (B, 1, K·L): each band zero-stuffed ×K and scaled by K (the graph's transposed
    conv with its up/down filter), then the cosine-modulated synthesis filters (taps+1 long, "same" padding)."""

    def __init__(self, subbands: int = 4, taps: int = 62):
        super().__init__()
        self.subbands, self.taps = subbands, taps
        self.register_buffer("updown", torch.zeros(subbands, subbands, subbands))   # ConvTranspose1d (in, out, k)
        self.register_buffer("filters", torch.zeros(1, subbands, taps + 1))          # Conv1d (out, in, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose1d(x, self.updown, stride=self.subbands)
        return F.conv1d(y, self.filters, padding=self.taps // 2)


def design_pqmf(subbands: int = 4, taps: int = 62, cutoff: float = 0.142, beta: float = 9.0) -> np.ndarray:
    """The synthesis filters from their formula (Kaiser-windowed sinc prototype, cosine modulation) — used only to
    check the ones read from the graph."""
    n = np.arange(taps + 1) - taps / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        proto = np.sin(np.pi * cutoff * n) / (np.pi * n)
    proto[taps // 2] = cutoff
    proto = proto * np.kaiser(taps + 1, beta)
    k = np.arange(subbands)[:, None]
    return 2 * proto * np.cos((2 * k + 1) * np.pi / (2 * subbands) * n - (-1) ** k * np.pi / 4)

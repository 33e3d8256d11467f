"""HiFT vocoder of the glmtts engine: 80-bin log-mel at 50 frames/s → 24 kHz waveform (480 samples per frame).

Our own torch implementation of the CosyVoice-2 "HiFTNet" generator (neural source-filter excitation + HiFi-GAN
upsampler + a tiny iSTFT head) that GLM-TTS ships as ``hift/hift.pt``. Module names and parameter shapes follow the
published checkpoint, so the real file loads with ``strict=True``:

* ``f0_predictor``: five weight-normed 3-tap convolutions with ELU (``condnet.0/2/4/6/8``) and a linear
  ``classifier`` giving |F0| in Hz per mel frame;
* ``m_source``: a harmonic sine source (fundamental + ``nb_harmonics`` overtones) merged by ``l_linear`` + tanh;
* ``conv_pre`` → ``ups[i]`` (transposed convs, rates 8·5·3) each fused with the STFT of the source through
  ``source_downs[i]`` + ``source_resblocks[i]``, then the mean of ``resblocks`` (Snake-activated residual stacks);
* ``conv_post`` → ``n_fft/2+1`` log-magnitudes and as many phases → iSTFT (n_fft 16, hop 4) → clamp to ±0.99.

Weight normalisation is torch's parametrization (state-dict keys ``<m>.parametrizations.weight.original0`` = g,
``original1`` = v, what the published code produces on current torch); checkpoints saved with the legacy
``weight_g``/``weight_v`` names are mapped on load.

Randomness: the published source draws a random initial phase per overtone and Gaussian noise from torch's *global*
RNG, so two calls differ. Here every draw comes from an explicit ``torch.Generator`` (``Vocoder`` defaults to
``seed=0``), in the same order, shapes and memory layout as the published code; hence with the same seed our output
equals the published one given ``torch.manual_seed(seed)`` (checked on CPU with random weights: excitation identical,
waveform within 2e-7). The distribution of the output is unchanged; only its reproducibility is new. (The random initial phase
is added to sample 0 only, which the published 1/480 linear down-sampling never reads, so it has no audible effect
there either; we still draw it to keep the random stream aligned.)
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

SAMPLE_RATE = 24000
HOP_LENGTH = 480            # output samples per mel frame at 24 kHz
CHECKPOINT_NAME = "hift.pt"
CONFIG_NAME = "config.json"

_WN_G = "parametrizations.weight.original0"
_WN_V = "parametrizations.weight.original1"


class HiFTCheckpointError(ValueError):
    """A HiFT checkpoint that cannot be read or does not match the architecture; the message names the file."""


# ---------------------------------------------------------------------------------------------------- configuration


@dataclass
class HiFTConfig:
    """Architecture sizes. The defaults are those GLM-TTS uses for its 24 kHz ``hift/hift.pt``."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = SAMPLE_RATE
    nsf_alpha: float = 0.1               # sine amplitude
    nsf_sigma: float = 0.003             # noise std in voiced regions
    nsf_voiced_threshold: float = 10.0   # Hz
    upsample_rates: list[int] = field(default_factory=lambda: [8, 5, 3])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 11, 7])
    istft_n_fft: int = 16
    istft_hop_len: int = 4
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    source_resblock_kernel_sizes: list[int] = field(default_factory=lambda: [7, 7, 11])
    source_resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512
    f0_num_class: int = 1

    @property
    def hop_length(self) -> int:
        """Output samples per input mel frame."""
        return math.prod(self.upsample_rates) * self.istft_hop_len

    def validate(self) -> None:
        n = len(self.upsample_rates)
        if n == 0 or len(self.upsample_kernel_sizes) != n:
            raise ValueError("upsample_rates and upsample_kernel_sizes must be non-empty and of equal length")
        if len(self.source_resblock_kernel_sizes) != n or len(self.source_resblock_dilation_sizes) != n:
            raise ValueError("one source resblock (kernel size and dilations) is needed per upsampling stage")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if self.base_channels % (2 ** n):
            raise ValueError(f"base_channels {self.base_channels} must be divisible by 2**{n}")
        if self.istft_n_fft % 2 or self.istft_hop_len <= 0:
            raise ValueError("istft_n_fft must be even and istft_hop_len positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HiFTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown HiFT config keys: {', '.join(unknown)}")
        cfg = cls(**dict(data))
        cfg.validate()
        return cfg


# ------------------------------------------------------------------------------------------------------ sub-modules


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return dilation * (kernel - 1) // 2


class Snake(nn.Module):
    """x + sin²(αx)/α with one learnable α per channel (linear scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha[None, :, None]
        return x + torch.sin(x * a).pow(2) * (1.0 / (a + 1e-9))


class ResBlock(nn.Module):
    """Stack of (Snake → dilated conv → Snake → conv) residual units, one per dilation."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size)))
            for _ in dilations
        )
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class ConvRNNF0Predictor(nn.Module):
    """Mel [B, C, T] → F0 in Hz [B, T] (non-negative)."""

    def __init__(self, in_channels: int = 80, cond_channels: int = 512, num_class: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(weight_norm(nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1)))
            layers.append(nn.ELU())
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.condnet(mel).transpose(1, 2)          # [B, T, C]
        return self.classifier(h).squeeze(-1).abs()


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise excitation from a sample-rate F0 track; ``l_linear`` merges the harmonics into one channel.

    Deterministic given ``generator``; the draws (initial phases ``[B, H]``, then noise ``[B, H, L]`` filled in
    channel-major memory order) match what the published source takes from the global RNG.
    """

    def __init__(self, sampling_rate: int, upsample_scale: int, harmonic_num: int, sine_amp: float,
                 noise_std: float, voiced_threshold: float):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.upsample_scale = int(upsample_scale)
        self.harmonic_num = harmonic_num
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.prefix_stable_noise = False      # see harmonics(); the engine turns it on for streaming

    @torch.no_grad()
    def harmonics(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """f0 [B, 1, L] in Hz (float32) → noisy voiced sines [B, H+1, L] (float32)."""
        b, _, length = f0.shape
        n_h = self.harmonic_num + 1
        up = self.upsample_scale
        mult = torch.arange(1, n_h + 1, device=f0.device, dtype=f0.dtype)[None, :, None]
        # phase increment per sample, in cycles, wrapped to [0, 1)
        step = (f0 * mult / self.sampling_rate) % 1                                      # [B, H+1, L]
        init_phase = torch.rand(b, n_h, device=f0.device, generator=generator)
        init_phase[:, 0] = 0.0                                                           # fundamental starts at 0
        step[:, :, 0] = step[:, :, 0] + init_phase
        # integrate at frame rate, then interpolate the (unwrapped) phase back to the sample rate
        step_frames = F.interpolate(step, scale_factor=1.0 / up, mode="linear")
        phase = torch.cumsum(step_frames, dim=-1) * 2 * math.pi
        phase = F.interpolate(phase * up, scale_factor=float(up), mode="linear")
        sines = torch.sin(phase) * self.sine_amp
        voiced = (f0 > self.voiced_threshold).to(torch.float32)                          # [B, 1, L]
        noise_amp = voiced * self.noise_std + (1 - voiced) * self.sine_amp / 3
        if self.prefix_stable_noise:
            # Box-Muller over uniform draws in sample-major order: the noise of the first L samples is the same
            # whatever the total length, so rendering a growing mel chunk by chunk reproduces the one-shot noise.
            u = torch.rand(b, length, n_h, 2, device=f0.device, generator=generator)
            noise = torch.sqrt(-2 * torch.log1p(-u[..., 0])) * torch.cos(2 * math.pi * u[..., 1])
        else:
            # Allocate [B, H+1, L] and fill it through a [B, L, H+1] view: same element order as the published code.
            noise = torch.empty(b, n_h, length, device=f0.device).transpose(1, 2).normal_(generator=generator)
        noise = noise.transpose(1, 2) * noise_amp
        return sines * voiced + noise

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """f0 [B, 1, L] → excitation [B, 1, L]."""
        h = self.harmonics(f0.float(), generator)
        w = self.l_linear.weight
        return torch.tanh(self.l_linear(h.transpose(1, 2).to(w.dtype))).transpose(1, 2)


# -------------------------------------------------------------------------------------------------------- generator


class HiFTGenerator(nn.Module):
    """The CosyVoice-2 HiFT generator with GLM-TTS's 24 kHz sizes; ``inference(mel) -> (wav, source)``."""

    def __init__(self, config: HiFTConfig | None = None, **overrides: Any):
        super().__init__()
        base = HiFTConfig() if config is None else config
        cfg = HiFTConfig.from_dict({**base.to_dict(), **overrides}) if overrides else base
        cfg.validate()
        self.config = cfg
        n_up = len(cfg.upsample_rates)
        n_fft = cfg.istft_n_fft
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.num_upsamples = n_up
        self.hop_length = cfg.hop_length

        self.m_source = SourceModuleHnNSF(cfg.sampling_rate, cfg.hop_length, cfg.nb_harmonics, cfg.nsf_alpha,
                                          cfg.nsf_sigma, cfg.nsf_voiced_threshold)
        self.conv_pre = weight_norm(nn.Conv1d(cfg.in_channels, cfg.base_channels, 7, padding=3))

        chans = [cfg.base_channels // 2 ** i for i in range(n_up + 1)]
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(chans[i], chans[i + 1], k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        # The source STFT runs at hop ``istft_hop_len``, i.e. at the rate of the last stage's output; stage i needs
        # it reduced by the product of the later stages' rates.
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i in range(n_up):
            factor = math.prod(cfg.upsample_rates[i + 1:])
            if factor == 1:
                down = nn.Conv1d(n_fft + 2, chans[i + 1], 1)
            else:
                down = nn.Conv1d(n_fft + 2, chans[i + 1], 2 * factor, factor, padding=factor // 2)
            self.source_downs.append(down)
            self.source_resblocks.append(ResBlock(chans[i + 1], cfg.source_resblock_kernel_sizes[i],
                                                  list(cfg.source_resblock_dilation_sizes[i])))
        self.resblocks = nn.ModuleList(
            ResBlock(chans[i + 1], k, list(d))
            for i in range(n_up)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = weight_norm(nn.Conv1d(chans[-1], n_fft + 2, 7, padding=3))
        self.f0_predictor = ConvRNNF0Predictor(cfg.in_channels, cfg.f0_cond_channels, cfg.f0_num_class)
        self.register_buffer("stft_window", torch.hann_window(n_fft, periodic=True), persistent=False)

    # ----------------------------------------------------------------------------------------------------- pieces

    def source(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """mel [B, C, T] → excitation [B, 1, T * hop_length] (float32)."""
        f0 = self.f0_predictor(mel).float()                                              # [B, T]
        f0 = F.interpolate(f0[:, None], scale_factor=float(self.hop_length), mode="nearest")
        return self.m_source(f0, generator).float()

    def _spec(self, s: torch.Tensor) -> torch.Tensor:
        n_fft, hop = self.config.istft_n_fft, self.config.istft_hop_len
        spec = torch.stft(s[:, 0].float(), n_fft, hop, n_fft, window=self.stft_window.float(), return_complex=True)
        return torch.cat([spec.real, spec.imag], dim=1)                                 # [B, n_fft+2, L/hop+1]

    def _ispec(self, x: torch.Tensor) -> torch.Tensor:
        n_fft, hop = self.config.istft_n_fft, self.config.istft_hop_len
        x = x.float()
        half = n_fft // 2 + 1
        mag = torch.exp(x[:, :half]).clamp(max=1e2)
        ph = torch.sin(x[:, half:])                   # the published head squashes the phase with sin
        spec = torch.complex(mag * torch.cos(ph), mag * torch.sin(ph))
        return torch.istft(spec, n_fft, hop, n_fft, window=self.stft_window.float())

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel [B, C, T] + excitation [B, 1, T*hop] → waveform [B, T*hop] (float32)."""
        cfg = self.config
        dtype = self.m_source.l_linear.weight.dtype
        s = self._spec(source).to(dtype)
        x = self.conv_pre(mel.to(dtype))
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, cfg.lrelu_slope))
            if i == self.num_upsamples - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            acc = blocks[0](x)
            for blk in blocks[1:]:
                acc = acc + blk(x)
            x = acc / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))           # default slope 0.01 here, as published
        wav = self._ispec(x)
        return wav.clamp(-cfg.audio_limit, cfg.audio_limit)

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, cache_source: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, C, T] → (waveform [B, T*hop], excitation [B, 1, T*hop]).

        ``cache_source`` (the excitation returned for the previous overlapping chunk) replaces the start of the new
        excitation, which keeps the phase continuous across streamed chunks.
        """
        s = self.source(mel, generator)
        if cache_source is not None and cache_source.shape[-1] > 0:
            n = min(cache_source.shape[-1], s.shape[-1])
            s[:, :, :n] = cache_source[:, :, :n].to(s)
        return self.decode(mel, s), s

    def fold_weight_norm(self) -> "HiFTGenerator":
        """Bake g·v/‖v‖ into plain weights for inference (the module then no longer has the checkpoint layout)."""
        for m in self.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return self


# ---------------------------------------------------------------------------------------------------------- vocoder


class Vocoder:
    """Inference wrapper: ``vocoder(mel[B, 80, T]) -> wav[B, T*480]`` float32 in [-0.99, 0.99], deterministic."""

    def __init__(self, model: HiFTGenerator, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 *, fold_weight_norm: bool = True, prefix_stable_noise: bool = False):
        self.device = torch.device(device)
        self.dtype = dtype
        model = model.to(device=self.device, dtype=dtype).eval()
        self.model = model.fold_weight_norm() if fold_weight_norm else model
        self.model.m_source.prefix_stable_noise = prefix_stable_noise
        self.config = model.config
        self.sample_rate = model.config.sampling_rate
        self.hop_length = model.hop_length
        self.n_mels = model.config.in_channels

    def _generator(self, seed: int | None, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        return torch.Generator(device=self.device).manual_seed(0 if seed is None else int(seed))

    def _check(self, mel: torch.Tensor) -> torch.Tensor:
        if not isinstance(mel, torch.Tensor) or mel.dim() != 3 or mel.shape[1] != self.n_mels or mel.shape[2] < 1:
            shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise ValueError(f"mel must be [B, {self.n_mels}, T>=1], got {shape}")
        return mel.to(device=self.device, dtype=self.dtype)

    def vocode(self, mel: torch.Tensor, *, seed: int | None = None, generator: torch.Generator | None = None,
               cache_source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(wav [B, T*480], excitation [B, 1, T*480]); pass the excitation's tail as ``cache_source`` next time."""
        mel = self._check(mel)
        wav, src = self.model.inference(mel, cache_source=cache_source, generator=self._generator(seed, generator))
        return wav.float(), src

    def __call__(self, mel: torch.Tensor, *, seed: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Same mel and seed (default 0) → same samples. ``generator`` (on the vocoder's device) overrides ``seed``."""
        return self.vocode(mel, seed=seed, generator=generator)[0]


# ------------------------------------------------------------------------------------------------- checkpoint files


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() or p.suffix == "" else p


def read_config(ckpt: str | Path) -> HiFTConfig:
    """The sidecar ``config.json`` next to ``hift.pt`` when present, else the published sizes."""
    ckpt = _resolve(ckpt)
    cfg_path = ckpt.parent / CONFIG_NAME
    if not cfg_path.exists():
        return HiFTConfig()
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return HiFTConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise HiFTCheckpointError(f"{cfg_path}: invalid HiFT config: {e}") from e


def canonical_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Published-layout keys: legacy ``weight_g``/``weight_v`` → parametrization names; a ``generator.`` prefix
    (CosyVoice training checkpoints) is dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key[len("generator."):] if key.startswith("generator.") else key
        if k.endswith(".weight_g"):
            k = k[: -len("weight_g")] + _WN_G
        elif k.endswith(".weight_v"):
            k = k[: -len("weight_v")] + _WN_V
        out[k] = value
    return out


def _describe_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {'; '.join(items[:3])}{more}")
    return ", ".join(parts)


def load_hift_generator(path: str | Path) -> HiFTGenerator:
    """Build the generator from ``config.json`` (or the published sizes) and load ``hift.pt`` strictly (CPU, fp32)."""
    ckpt = _resolve(path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"HiFT checkpoint not found: {ckpt}")
    cfg = read_config(ckpt)
    try:
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/zip error means an unusable file
        raise HiFTCheckpointError(f"{ckpt}: not a readable torch state dict: {e}") from e
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise HiFTCheckpointError(f"{ckpt}: expected a flat state dict of tensors")
    state = canonical_state_dict(raw)
    model = HiFTGenerator(cfg)
    problem = _describe_mismatch(model, state)
    if problem:
        hint = "" if (ckpt.parent / CONFIG_NAME).exists() else f" (no {CONFIG_NAME}: published sizes assumed)"
        raise HiFTCheckpointError(f"{ckpt}: does not match the HiFT architecture{hint}: {problem}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_hift(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              *, prefix_stable_noise: bool = False) -> Vocoder:
    """``hift.pt`` (a file, or the directory holding it and an optional ``config.json``) → ready ``Vocoder``."""
    return Vocoder(load_hift_generator(path), device=device, dtype=dtype, prefix_stable_noise=prefix_stable_noise)


def write_tiny_hift(path: str | Path, *, base_channels: int = 64, f0_cond_channels: int | None = None,
                    seed: int = 0, legacy_weight_norm: bool = False, **overrides: Any) -> Path:
    """Write a random-init HiFT state dict in the published layout (+ ``config.json``) for tests.

    ``path`` is the ``hift.pt`` file or its directory. The upsampling stays 8·5·3 × iSTFT hop 4 (480 samples per
    frame) unless overridden. ``legacy_weight_norm`` writes ``weight_g``/``weight_v`` keys instead.
    """
    ckpt = _resolve(path)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    cfg = HiFTConfig.from_dict({"base_channels": base_channels,
                                "f0_cond_channels": f0_cond_channels or base_channels, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HiFTGenerator(cfg)
        with torch.no_grad():
            # keep the random log-magnitudes small so the untrained output is a quiet noise, not a clipped square
            model.conv_post.parametrizations.weight.original0.mul_(0.1)
            model.f0_predictor.classifier.bias.fill_(150.0)     # a plausible voiced F0 so the sine path is used
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if legacy_weight_norm:
        state = {(k[: -len(_WN_G)] + "weight_g" if k.endswith(_WN_G)
                  else k[: -len(_WN_V)] + "weight_v" if k.endswith(_WN_V) else k): v for k, v in state.items()}
    torch.save(state, ckpt)
    (ckpt.parent / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=1) + "\n", encoding="utf-8")
    return ckpt

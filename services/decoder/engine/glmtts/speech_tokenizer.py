"""GLM-TTS speech tokenizer: 16 kHz mono audio -> discrete speech tokens at 25 Hz.

The published tokenizer is the lower half of a Whisper-large-v3 encoder with a vector quantizer in the middle:

    log-mel (128 bins, 100 frames/s; transformers' WhisperFeatureExtractor)
    -> conv1 (k=3, stride 1) + GELU -> conv2 (k=3, stride 2) + GELU          50 frames/s
    -> + learned absolute positions (``embed_positions``)
    -> ``quantize_position`` pre-LN transformer layers (block-causal attention over blocks of
       ``quantize_causal_block_size`` frames; padded frames are never attended to)
    -> at ``pooling_position``: right-pad to a multiple of ``pooling_kernel_size`` and average (or max) pool
                                                                             25 frames/s with the published k=2
    -> at ``quantize_position``: the id of the nearest codebook row (squared euclidean distance) = the token

This module is our own implementation of that computation.  It reads the checkpoint directory in the published
layout (``config.json`` with the WhisperVQConfig field names, ``preprocessor_config.json`` for
WhisperFeatureExtractor, ``model*.safetensors`` with keys under ``model.encoder.``); encoder layers at or above
``quantize_position`` and the final ``layer_norm`` are not needed for tokens and are skipped, everything else under
``model.encoder.`` must match our module key for key and shape for shape.

Audio longer than 30 s is cut into 30 s pieces that are tokenized as one padded batch and concatenated, as the
reference front end does; a piece of n samples gives ceil(n / 640) tokens (640 samples = 40 ms with the published
strides), so 2.0 s of audio -> 50 tokens.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "CheckpointError",
    "SpeechTokenizer",
    "VQEncoder",
    "VQEncoderConfig",
    "write_tiny_speech_tokenizer",
]

SAMPLE_RATE = 16000
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_PATTERN = "model*.safetensors"
KEY_PREFIX = "model.encoder."
SEGMENT_SECONDS = 30          # the reference front end cuts audio into 30 s pieces (Whisper's window)
SEGMENTS_PER_BATCH = 128      # ... and runs them in batches of this many


# Whisper's activation names (the published checkpoint uses "gelu", the exact erf form)
_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


class CheckpointError(ValueError):
    """The checkpoint directory does not hold a usable speech tokenizer (the message names the file)."""


# --------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class VQEncoderConfig:
    """The subset of the published WhisperVQConfig that the tokenizer needs (field names as in config.json)."""

    num_mel_bins: int = 128
    d_model: int = 1280
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    encoder_layers: int = 32
    max_source_positions: int = 1500
    activation_function: str = "gelu"
    encoder_causal_attention: bool = False
    encoder_causal_convolution: bool = False
    quantize_causal_encoder: bool = False
    quantize_causal_block_size: int | None = 200
    quantize_position: int = 16
    quantize_vocab_size: int | None = 32768
    quantize_ema_decay: float | None = 0.99
    pooling_kernel_size: int | None = 2
    pooling_type: str = "avg"
    pooling_position: int | None = 16

    @classmethod
    def from_dict(cls, raw: dict, source: str = CONFIG_FILE) -> "VQEncoderConfig":
        """Build from a config.json dict; fields we do not use are ignored, absent ones take WhisperVQConfig's
        defaults (for the Whisper fields: transformers' WhisperConfig defaults)."""
        defaults = {  # WhisperVQConfig / WhisperConfig constructor defaults, used when a field is absent
            "num_mel_bins": 80, "d_model": 384, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
            "encoder_layers": 4, "max_source_positions": 1500, "activation_function": "gelu",
            "encoder_causal_attention": False, "encoder_causal_convolution": False,
            "quantize_causal_encoder": False, "quantize_causal_block_size": None, "quantize_position": 16,
            "quantize_vocab_size": None, "quantize_ema_decay": None, "pooling_kernel_size": None,
            "pooling_type": "max", "pooling_position": 0,
        }
        values = {name: raw.get(name, default) for name, default in defaults.items()}
        try:
            cfg = cls(**values)
            cfg.validate()
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: {e}") from None
        return cfg

    def validate(self) -> None:
        if not self.quantize_vocab_size or self.quantize_vocab_size <= 0:
            raise ValueError("quantize_vocab_size must be set: a speech tokenizer needs a codebook")
        if self.d_model % self.encoder_attention_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by "
                             f"encoder_attention_heads {self.encoder_attention_heads}")
        if not 1 <= self.quantize_position <= self.encoder_layers:
            raise ValueError(f"quantize_position {self.quantize_position} must be in 1..encoder_layers "
                             f"({self.encoder_layers})")
        if self.pooling_kernel_size:
            if self.pooling_type not in ("avg", "max"):
                raise ValueError(f"pooling_type {self.pooling_type!r} is not supported (avg, max)")
            if not self.pooling_position or not 1 <= self.pooling_position <= self.quantize_position:
                raise ValueError(f"pooling_position {self.pooling_position} must be in 1..quantize_position "
                                 f"({self.quantize_position}) when pooling_kernel_size is set")
        if self.quantize_causal_block_size is not None and self.quantize_causal_block_size <= 0:
            raise ValueError("quantize_causal_block_size must be positive")
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(f"activation_function {self.activation_function!r} is unknown")

    @property
    def pool(self) -> int:
        return self.pooling_kernel_size or 1

    @property
    def causal_layers(self) -> bool:
        # the tokenizer keeps only the layers below the quantizer, so these two flags mean the same here
        return bool(self.encoder_causal_attention or self.quantize_causal_encoder)

    @property
    def pooled_positions(self) -> int:
        return math.ceil(self.max_source_positions / self.pool)


# --------------------------------------------------------------------------------------------------- model


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)   # Whisper's key projection has no bias
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None, causal: bool) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if causal:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class _EncoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + fc2(act(fc1(LN(x))))."""

    def __init__(self, cfg: VQEncoderConfig) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)
        self.act = _ACTIVATIONS[cfg.activation_function]
        self.causal = cfg.causal_layers

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), allowed, self.causal)
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class _Conv(nn.Conv1d):
    """k=3 convolution, either centred (padding 1) or causal (2 zeros on the left); parameters as nn.Conv1d."""

    def __init__(self, cin: int, cout: int, stride: int, causal: bool) -> None:
        super().__init__(cin, cout, kernel_size=3, stride=stride, padding=0 if causal else 1)
        self.left = 2 if causal else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left:
            x = F.pad(x, (self.left, 0))
        return super().forward(x)


def _allowed(valid: torch.Tensor, block: int | None) -> torch.Tensor:
    """Boolean attention mask (True = may attend): keys must be real frames; with ``block``, a query sees every
    earlier frame and every frame of its own block of ``block`` frames."""
    if block is None:
        return valid[:, None, None, :]
    t = valid.shape[1]
    pos = torch.arange(t, device=valid.device)
    see = (pos[None, :] <= pos[:, None]) | ((pos[None, :] // block) == (pos[:, None] // block))
    return see[None, None] & valid[:, None, None, :]


class VQEncoder(nn.Module):
    """The encoder up to and including the quantizer; parameter names follow the published checkpoint (without
    the ``model.encoder.`` prefix)."""

    def __init__(self, cfg: VQEncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.d_model
        self.conv1 = _Conv(cfg.num_mel_bins, d, stride=1, causal=cfg.encoder_causal_convolution)
        self.conv2 = _Conv(d, d, stride=2, causal=cfg.encoder_causal_convolution)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, d)
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.quantize_position))
        self.codebook = nn.Embedding(cfg.quantize_vocab_size, d)
        self.embed_positions2 = nn.Embedding(cfg.pooled_positions, d)   # used after the quantizer only
        if cfg.quantize_ema_decay is not None:
            # training-time EMA statistics; they are part of the published state dict, unused for inference
            self.register_buffer("ema_count", torch.ones(cfg.quantize_vocab_size))
            self.register_buffer("ema_weight", torch.zeros(cfg.quantize_vocab_size, d))
        self.requires_grad_(False)

    @property
    def frames_per_token(self) -> int:
        """Mel frames per token (conv2 halves the rate, pooling divides by its kernel)."""
        return 2 * self.cfg.pool

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, mel, T) with T a multiple of ``frames_per_token``; frame_mask (B, T), nonzero = real frame.
        Returns token ids (B, T / frames_per_token) and the matching boolean mask of real tokens."""
        cfg = self.cfg
        b, _, frames = features.shape
        if frames % self.frames_per_token:
            raise ValueError(f"{frames} mel frames is not a multiple of {self.frames_per_token}")
        n = frames // 2
        if n > cfg.max_source_positions:
            raise ValueError(f"{frames} mel frames exceed the encoder's {cfg.max_source_positions} positions")
        valid = frame_mask[:, ::2].bool()
        block = cfg.quantize_causal_block_size
        allowed = None if cfg.causal_layers else _allowed(valid, block)

        x = F.gelu(self.conv1(features))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.embed_positions.weight[:n]

        for i, layer in enumerate(self.layers, start=1):
            x = layer(x, allowed)
            if cfg.pooling_kernel_size and i == cfg.pooling_position:
                k = cfg.pooling_kernel_size
                y = x.transpose(1, 2)
                if y.shape[-1] % k:
                    y = F.pad(y, (0, k - y.shape[-1] % k))
                y = F.avg_pool1d(y, k) if cfg.pooling_type == "avg" else F.max_pool1d(y, k)
                x = y.transpose(1, 2)
                valid = valid[:, ::k]
                if not cfg.causal_layers:
                    allowed = _allowed(valid, None if block is None else block // k)

        flat = x.reshape(-1, cfg.d_model)
        code = self.codebook.weight
        # squared distance |x|^2 + |c|^2 - 2 x.c; the first nearest row wins a tie
        dist = (flat * flat).sum(1, keepdim=True) + (code * code).sum(1)[None, :] - 2.0 * (flat @ code.t())
        tokens = dist.argmin(dim=1).view(b, -1)
        return tokens, valid


# --------------------------------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"speech tokenizer: {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"speech tokenizer: {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"speech tokenizer: {path} does not hold a JSON object")
    return data


def _kept(name: str, quantize_position: int) -> bool:
    """Whether a ``model.encoder.``-relative key belongs to the tokenizer (final norm and upper layers do not)."""
    if name.startswith("layer_norm"):
        return False
    if name.startswith("layers."):
        idx = name.split(".", 2)[1]
        return not idx.isdigit() or int(idx) < quantize_position
    return True


def _load_state(directory: Path, cfg: VQEncoderConfig, expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors import SafetensorError

    files = sorted(directory.glob(WEIGHTS_PATTERN))
    if not files:
        raise FileNotFoundError(f"speech tokenizer: no {WEIGHTS_PATTERN} in {directory}")
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():
                    if not key.startswith(KEY_PREFIX):
                        continue
                    name = key[len(KEY_PREFIX):]
                    if not _kept(name, cfg.quantize_position):
                        continue
                    if name in state:
                        raise CheckpointError(f"speech tokenizer: {key} is in both {origin[name]} and {file}")
                    if name not in expected:
                        raise CheckpointError(f"speech tokenizer: {file}: unexpected tensor {key} "
                                              f"(not part of the encoder described by {CONFIG_FILE})")
                    shape = tuple(f.get_slice(key).get_shape())
                    if shape != tuple(expected[name]):
                        raise CheckpointError(f"speech tokenizer: {file}: {key} has shape {list(shape)}, "
                                              f"{CONFIG_FILE} implies {list(expected[name])}")
                    state[name] = f.get_tensor(key)
                    origin[name] = file
        except SafetensorError as e:
            raise CheckpointError(f"speech tokenizer: {file} is not a readable safetensors file: {e}") from None
    missing = [KEY_PREFIX + k for k in expected if k not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"speech tokenizer: {', '.join(str(f) for f in files)}: missing {shown}")
    return state


class SpeechTokenizer:
    """Reference audio (float32 mono 16 kHz) -> GLM-TTS speech token ids in [0, codebook_size)."""

    def __init__(self, encoder: VQEncoder, feature_extractor, device: torch.device) -> None:
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "SpeechTokenizer":
        """Load a checkpoint directory in the published layout (strict: every encoder tensor below the quantizer,
        nothing unexpected, every shape as config.json implies)."""
        from transformers import WhisperFeatureExtractor

        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"speech tokenizer: checkpoint directory {directory} does not exist")
        cfg = VQEncoderConfig.from_dict(_read_json(directory / CONFIG_FILE), str(directory / CONFIG_FILE))
        pre = _read_json(directory / PREPROCESSOR_FILE)
        try:
            fe = WhisperFeatureExtractor.from_dict(pre)
        except Exception as e:  # noqa: BLE001 - any failure here is a bad file
            raise CheckpointError(f"speech tokenizer: {directory / PREPROCESSOR_FILE}: {e}") from None
        if fe.sampling_rate != SAMPLE_RATE or fe.feature_size != cfg.num_mel_bins:
            raise CheckpointError(
                f"speech tokenizer: {directory / PREPROCESSOR_FILE}: sampling_rate {fe.sampling_rate} / "
                f"feature_size {fe.feature_size} do not fit ({SAMPLE_RATE} Hz, num_mel_bins {cfg.num_mel_bins} "
                f"in {CONFIG_FILE})")

        encoder = VQEncoder(cfg)
        expected = {k: v.shape for k, v in encoder.state_dict().items()}
        state = _load_state(directory, cfg, expected)
        encoder.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
        dev = torch.device(device)
        encoder.to(dev).eval()
        return cls(encoder, fe, dev)

    @property
    def codebook_size(self) -> int:
        return self.encoder.cfg.quantize_vocab_size

    @property
    def samples_per_token(self) -> int:
        return self.encoder.frames_per_token * self.feature_extractor.hop_length

    @property
    def token_rate(self) -> float:
        return SAMPLE_RATE / self.samples_per_token

    def tokenize(self, pcm16k: np.ndarray) -> list[int]:
        """Token ids for one utterance: ceil(n / samples_per_token) per 30 s piece (25 per second published)."""
        audio = np.asarray(pcm16k, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"pcm16k must be mono (1-D), got shape {audio.shape}")
        if audio.size == 0:
            return []
        if not np.isfinite(audio).all():
            raise ValueError("pcm16k contains NaN or infinite samples")
        seg = SEGMENT_SECONDS * SAMPLE_RATE
        pieces = [audio[i:i + seg] for i in range(0, audio.size, seg)]
        out: list[int] = []
        with torch.inference_mode():
            for start in range(0, len(pieces), SEGMENTS_PER_BATCH):
                batch = pieces[start:start + SEGMENTS_PER_BATCH]
                feats = self.feature_extractor(
                    batch, sampling_rate=SAMPLE_RATE, return_attention_mask=True, return_tensors="pt",
                    padding="longest", pad_to_multiple_of=self.samples_per_token,
                    device=str(self.device))
                features = feats["input_features"].to(self.device, torch.float32)
                mask = feats["attention_mask"].to(self.device)
                tokens, valid = self.encoder(features, mask)
                for row, keep in zip(tokens.cpu(), valid.cpu()):
                    out.extend(row[keep].tolist())
        return out


# --------------------------------------------------------------------------------------------------- tiny


def write_tiny_speech_tokenizer(path: str | Path, *, d_model: int = 64, layers: int = 2, heads: int = 2,
                                codebook_size: int = 32768, seed: int = 0, num_mel_bins: int = 128,
                                upper_layers: int = 1) -> Path:
    """Write a randomly initialised tokenizer in the published layout: config.json (published field names and
    published non-size settings: avg pooling k=2, block-causal 200, EMA buffers), preprocessor_config.json and
    model.safetensors holding the whole encoder under ``model.encoder.`` -- ``layers`` layers below the quantizer
    plus ``upper_layers`` above it and the final layer_norm, which the loader must skip, like the real file."""
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    total_layers = layers + upper_layers
    cfg = VQEncoderConfig(
        num_mel_bins=num_mel_bins, d_model=d_model, encoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
        encoder_layers=total_layers, quantize_position=layers, pooling_position=layers,
        quantize_vocab_size=codebook_size)
    config = {
        "activation_dropout": 0.0,
        "activation_function": cfg.activation_function,
        "apply_spec_augment": False,
        "architectures": ["WhisperVQForConditionalGeneration"],
        "attention_dropout": 0.0,
        "begin_suppress_tokens": [220, 50257],
        "bos_token_id": 50257,
        "classifier_proj_size": 256,
        "d_model": d_model,
        "decoder_attention_heads": heads,
        "decoder_ffn_dim": 4 * d_model,
        "decoder_layerdrop": 0.0,
        "decoder_layers": total_layers,
        "decoder_start_token_id": 50258,
        "dropout": 0.0,
        "encoder_attention_heads": heads,
        "encoder_causal_attention": cfg.encoder_causal_attention,
        "encoder_causal_convolution": cfg.encoder_causal_convolution,
        "encoder_ffn_dim": cfg.encoder_ffn_dim,
        "encoder_layerdrop": 0.0,
        "encoder_layers": total_layers,
        "eos_token_id": 50257,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "max_source_positions": cfg.max_source_positions,
        "max_target_positions": 448,
        "model_type": "whisper",
        "num_hidden_layers": total_layers,
        "num_mel_bins": num_mel_bins,
        "pad_token_id": 50256,
        "pooling_kernel_size": cfg.pooling_kernel_size,
        "pooling_position": cfg.pooling_position,
        "pooling_type": cfg.pooling_type,
        "quantize_causal_block_size": cfg.quantize_causal_block_size,
        "quantize_causal_encoder": cfg.quantize_causal_encoder,
        "quantize_commit_coefficient": 0.25,
        "quantize_ema_decay": cfg.quantize_ema_decay,
        "quantize_encoder_only": False,
        "quantize_loss_scale": 10.0,
        "quantize_position": cfg.quantize_position,
        "quantize_restart_interval": 100,
        "quantize_vocab_size": codebook_size,
        "scale_embedding": False,
        "skip_language_detection": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": 51866,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=SAMPLE_RATE).to_json_file(
        str(directory / PREPROCESSOR_FILE))

    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    # Whisper's fixed sinusoidal table for embed_positions (as the reference initialiser does)
    half = d_model // 2
    inv = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    angle = torch.arange(cfg.max_source_positions, dtype=torch.float32)[:, None] * inv[None, :]
    sinus = torch.cat([angle.sin(), angle.cos()], dim=1)

    encoder = VQEncoder(cfg)
    upper = nn.ModuleList(_EncoderLayer(cfg) for _ in range(upper_layers))
    tensors: dict[str, torch.Tensor] = {}
    modules = list(encoder.state_dict().items()) + [
        (f"layers.{layers + i}.{k}", v) for i, layer in enumerate(upper) for k, v in layer.state_dict().items()]
    for name, value in modules:
        leaf = name.rsplit(".", 1)[-1]
        if name == "embed_positions.weight":
            t = sinus.clone()
        elif name == "ema_count":
            t = torch.ones_like(value)
        elif name == "ema_weight":
            continue  # filled from the codebook below
        elif "layer_norm" in name:
            t = torch.ones_like(value) if leaf == "weight" else torch.zeros_like(value)
        elif name == "codebook.weight":
            t = normal(*value.shape, std=1.0)   # unit-scale codes so random audio spreads over many ids
        elif leaf == "bias":
            t = torch.zeros_like(value)
        else:   # conv / linear weights, 1/sqrt(fan_in) so that the audio, not only the position, shapes the tokens
            t = normal(*value.shape, std=1.0 / math.sqrt(value[0].numel()))
        tensors[KEY_PREFIX + name] = t.contiguous()
    if cfg.quantize_ema_decay is not None:
        tensors[KEY_PREFIX + "ema_weight"] = tensors[KEY_PREFIX + "codebook.weight"].clone()
    tensors[KEY_PREFIX + "layer_norm.weight"] = torch.ones(d_model)
    tensors[KEY_PREFIX + "layer_norm.bias"] = torch.zeros(d_model)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory

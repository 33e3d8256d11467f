"""Flow-matching acoustic model of the ``glmtts`` engine: speech tokens (+ prompt mel, speaker embedding) → 80-bin mel.

Our own pure-torch implementation of the GLM-TTS flow model (a DiT velocity estimator sampled with Euler steps on a
cosine time schedule and classifier-free guidance). Module attribute names and parameter shapes follow the published
checkpoint layout, so a GLM-TTS ``flow/flow.pt`` loads into :class:`Flow` with ``load_state_dict(strict=True)``;
``flow/config.yaml`` (hyperpyyaml, top-level ``flow: !new:flow.flow.Flow`` with the constructor kwargs) is read by a
small yaml loader of our own, without importing any GLM-TTS code.

Two sampling modes:

* full attention (``block_pattern=None``): one ODE over the whole utterance, every frame sees every frame; this is
  what the published offline path does.
* block mode (``block_pattern=[25, 50, 200]``, token counts of consecutive blocks of the non-prompt tokens, the last
  size repeating): the utterance is produced block by block. Block *k* is sampled by an ODE over the prompt and all
  tokens up to the end of block *k* (plus ``lookahead`` tokens of right context when given), with block-causal
  attention, while the frames of earlier blocks are pinned at every Euler step to the states they had when they were
  produced (the published streaming path's per-step state cache). A block's mel therefore depends only on the
  tokens up to its end (+ lookahead) and on its noise prefix: appending tokens never changes the frames of blocks
  already complete, and :class:`FlowStream` (chunk by chunk) returns exactly what :meth:`Flow.inference` returns for
  the whole token sequence. Per-frame lookahead is necessary for exactness because the published network is not
  causal by itself (its convolutions look ahead and the token ConvNeXt's response normalization spans the whole
  sequence).
"""
from __future__ import annotations

import ast
import math
import operator
import re
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
import yaml
from torch import nn

__all__ = ["Flow", "FlowStream", "FlowCheckpointError", "load_flow", "write_tiny_flow", "block_attention_mask"]

SPEAKER_EMBED_DIM = 192          # raw CAM++ embedding size the flow model takes
WAVLM_EMBED_DIM = 256            # optional second speaker embedding (use_wavlm_emb)
TEXT_POS_MAX = 4096              # positions of the token-embedding sinusoid table (longer inputs reuse the last)
FLOW_TAG = "!new:flow.flow.Flow"


class FlowCheckpointError(RuntimeError):
    """A flow checkpoint directory that cannot be used (missing file, bad config, state dict mismatch)."""


# ---------------------------------------------------------------------------------------------------------------
# building blocks (names of attributes / Sequential indices are the checkpoint's)
# ---------------------------------------------------------------------------------------------------------------

def _sinusoid_table(dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """[length, dim]: cos of position × frequency in the first half, sin in the second."""
    half = dim // 2
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2)[:half].float() / dim))
    ang = torch.outer(torch.arange(length).float(), inv)
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class _TimeMLP(nn.Module):
    """Flow time t ∈ [0, 1] → sinusoidal features (scaled by 1000) → 2-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:       # t: [B] float32
        half = self.freq_dim // 2
        step = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device).float() * -step)
        arg = 1000 * t.float().unsqueeze(1) * freqs.unsqueeze(0)
        feats = torch.cat([arg.sin(), arg.cos()], dim=-1)
        return self.time_mlp(feats.to(self.time_mlp[0].weight.dtype))


class _ResponseNorm(nn.Module):
    """ConvNeXt-V2 global response normalization; the L2 norm runs over the time axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # [B, T, D]
        g = torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return x + self.gamma * (x * n) + self.beta


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = _ResponseNorm(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # [B, T, D]
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h)))))
        return x + h


class _TokenEmbedding(nn.Module):
    """Speech tokens → nearest-neighbour upsampling to the mel frame count → embedding + sinusoid → ConvNeXt stack."""

    def __init__(self, vocab_size: int, dim: int, n_conv: int = 4, conv_mult: int = 2):
        super().__init__()
        self.text_embed = nn.Embedding(vocab_size + 1, dim)   # id 0 doubles as the "no text" filler
        self.register_buffer("freqs_cis", _sinusoid_table(dim, TEXT_POS_MAX), persistent=False)
        self.text_blocks = nn.Sequential(*[_ConvNeXtBlock(dim, dim * conv_mult) for _ in range(n_conv)])

    def forward(self, tokens: torch.Tensor, n_frames: int) -> torch.Tensor:   # [B, N] → [B, n_frames, D]
        n_rows = self.text_embed.num_embeddings
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= n_rows):
            raise ValueError(f"speech token ids must lie in [0, {n_rows - 1}], got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        idx = F.interpolate(tokens.unsqueeze(1).float(), size=n_frames, mode="nearest").squeeze(1).long()
        h = self.text_embed(idx)
        pos = torch.arange(n_frames, device=tokens.device).clamp(max=TEXT_POS_MAX - 1)
        h = h + self.freqs_cis[pos].to(h.dtype)
        return self.text_blocks(h)


class _ConvPosition(nn.Module):
    def __init__(self, dim: int, kernel: int = 31, groups: int = 16):
        super().__init__()
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel, groups=groups, padding=kernel // 2), nn.Mish(),
            nn.Conv1d(dim, dim, kernel, groups=groups, padding=kernel // 2), nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # [B, T, D]
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class _InputProjection(nn.Module):
    """[noisy mel | condition | token embedding] → model width, plus a convolutional position signal."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.conv_pos_embed = _ConvPosition(dim)

    def forward(self, x, cond, text):
        h = self.proj(torch.cat([x, cond, text], dim=-1))
        return h + self.conv_pos_embed(h)


class _Rotary(nn.Module):
    """Rotary position angles (pairs of adjacent channels share a frequency); ``inv_freq`` is in the checkpoint."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim, self.base = dim, base
        self.register_buffer("inv_freq", self._inv_freq())

    def _inv_freq(self, device=None) -> torch.Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device).float() / self.dim))

    def angles(self, n: int) -> torch.Tensor:                 # [n, dim], float32 even when the model is half
        dev = self.inv_freq.device
        pos = torch.arange(n, device=dev).float()
        return torch.outer(pos, self._inv_freq(dev)).repeat_interleave(2, dim=-1)


def _rotate(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``ang.shape[-1]`` channels of ``x`` [B, T, C] by the angles [T, r]; the rest pass through."""
    r = ang.shape[-1]
    head, tail = x[..., :r], x[..., r:]
    pairs = head.float().unflatten(-1, (r // 2, 2))
    swapped = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    rot = head.float() * ang.cos() + swapped * ang.sin()
    return torch.cat([rot.to(x.dtype), tail], dim=-1)


class _AdaNorm(nn.Module):
    """LayerNorm modulated by the conditioning vector: 6 chunks (shift/scale/gate for attention, then for the MLP)."""

    def __init__(self, dim: int, extra: int = 0):
        super().__init__()
        self.linear = nn.Linear(dim + extra, dim * 6)

    def forward(self, x, c):
        mod = self.linear(F.silu(c))
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.chunk(6, dim=1)
        h = F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale_a[:, None]) + shift_a[:, None]
        return h, gate_a, shift_m, scale_m, gate_m


class _AdaNormOut(nn.Module):
    """Final modulated LayerNorm: 2 chunks, scale first, then shift."""

    def __init__(self, dim: int, extra: int = 0):
        super().__init__()
        self.linear = nn.Linear(dim + extra, dim * 2)

    def forward(self, x, c):
        scale, shift = self.linear(F.silu(c)).chunk(2, dim=1)
        return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Identity()])   # index 1 was a dropout

    def forward(self, x, rope_ang, attn_mask=None):
        b, n, _ = x.shape
        # the rotary angles cover one head's width and are applied before the head split (checkpoint behaviour)
        q = _rotate(self.to_q(x), rope_ang)
        k = _rotate(self.to_k(x), rope_ang)
        v = self.to_v(x)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out[0](o.transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: float):
        super().__init__()
        hidden = int(dim * mult)
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh")),
                                nn.Identity(),                  # was a dropout
                                nn.Linear(hidden, dim))

    def forward(self, x):
        return self.ff(x)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: float, extra: int):
        super().__init__()
        self.attn_norm = _AdaNorm(dim, extra)
        self.attn = _SelfAttention(dim, heads, dim_head)
        self.ff = _FeedForward(dim, ff_mult)

    def forward(self, x, c, rope_ang, attn_mask=None):
        h, gate_a, shift_m, scale_m, gate_m = self.attn_norm(x, c)
        x = x + gate_a.unsqueeze(1) * self.attn(h, rope_ang, attn_mask)
        h = F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale_m[:, None]) + shift_m[:, None]
        return x + gate_m.unsqueeze(1) * self.ff(h)


class DiT(nn.Module):
    """The velocity estimator v(x_t, t | condition, tokens, speaker)."""

    def __init__(self, *, trans_dim: int, depth: int, heads: int, dim_head: int = 64, ff_mult: float = 2,
                 mel_dim: int = 80, text_vocab_size: int, text_emb_dim: int, conv_layers: int = 4,
                 condition_dim: int, spkr_emb_adaLN: bool = False, wav_lm_emb: bool = False):
        super().__init__()
        if trans_dim % 16:
            raise ValueError(f"trans_dim must be a multiple of 16 (grouped position convolution), got {trans_dim}")
        if text_emb_dim % 2 or dim_head % 2:
            raise ValueError("speech_token_dim and dim_head must be even")
        self.spkr_dim = (SPEAKER_EMBED_DIM + (WAVLM_EMBED_DIM if wav_lm_emb else 0)) if spkr_emb_adaLN else 0
        self.time_embed = _TimeMLP(trans_dim)
        self.text_emb_layer = _TokenEmbedding(text_vocab_size, text_emb_dim, n_conv=conv_layers)
        self.emb_concator = _InputProjection(mel_dim + text_emb_dim + condition_dim, trans_dim)
        self.rotary_embed = _Rotary(dim_head)
        self.transformer_blocks = nn.ModuleList(
            [_Block(trans_dim, heads, dim_head, ff_mult, self.spkr_dim) for _ in range(depth)])
        self.norm_out = _AdaNormOut(trans_dim, self.spkr_dim)
        self.proj_out = nn.Linear(trans_dim, mel_dim)

    def forward(self, x, cond, tokens, t, spk=None, attn_mask=None):
        """x, cond: [B, T, *]; tokens: [B, N]; t: [B]; spk: [B, spkr_dim] (adaLN models); attn_mask: bool [T, T]."""
        n = x.shape[1]
        c = self.time_embed(t)
        if self.spkr_dim:
            c = torch.cat([c, spk.to(c.dtype)], dim=-1)
        h = self.emb_concator(x, cond, self.text_emb_layer(tokens, n))
        ang = self.rotary_embed.angles(n)
        for block in self.transformer_blocks:
            h = block(h, c, ang, attn_mask)
        return self.proj_out(self.norm_out(h, c))


# ---------------------------------------------------------------------------------------------------------------
# block-causal attention mask
# ---------------------------------------------------------------------------------------------------------------

def _mask_frames(n_tokens: int) -> int:
    """Token count → mask block size in frames, with the published (12.5 Hz tokens, 22050/256 Hz frames) rule."""
    return int(n_tokens / 12.5 * 22050 / 256)


def block_attention_mask(block_frames: Sequence[int], n: int, device=None) -> torch.Tensor:
    """Bool [n, n] mask (True = may attend). Frames are grouped in consecutive blocks (sizes ``block_frames``, the
    last size repeating); a frame sees everything up to the end of its block, and a frame in the later part of its
    block also sees the first frames of the next one, so that every frame has at least half a block (two thirds for
    blocks over 172 frames) of right context."""
    sizes = [int(s) for s in block_frames]
    if not sizes or any(s < 0 for s in sizes) or sizes[-1] <= 0:
        raise ValueError(f"bad block sizes {block_frames!r}")
    ends = torch.empty(n, dtype=torch.long)
    start, j = 0, 0
    while start < n:
        size = sizes[min(j, len(sizes) - 1)]
        j += 1
        if size == 0:
            continue
        rows = torch.arange(start, min(start + size, n))
        future = size - 1 - (rows - start)
        min_future = int(size / 2) if size <= 172 else int(size / 1.5)
        ends[rows] = start + size + (min_future - future).clamp(min=0)
        start += size
    cols = torch.arange(n)
    return (cols[None, :] < ends[:, None]).to(device)


# ---------------------------------------------------------------------------------------------------------------
# the flow model
# ---------------------------------------------------------------------------------------------------------------

class Flow(nn.Module):
    """GLM-TTS flow model. Constructor kwargs are the published ones (``flow/config.yaml``); ``trans_dim``, ``depth``,
    ``heads`` and ``dim_head`` override the sizes that the published code derives from ``big_model`` (for tiny test
    checkpoints). Training-only kwargs are accepted and stored."""

    def __init__(self,
                 speech_token_dim: int = 512,
                 vocab_size: int = 100000,
                 input_frame_rate: float = 12.5,
                 spk_embed_dim: int = 80,
                 mel_dim: int = 80,
                 big_model: bool = False,
                 spkr_emb_adaLN: bool = False,
                 calc_prompt_mel_loss: bool = True,
                 speech_token_cfg: bool = True,
                 use_wavlm_emb: bool = False,
                 remove_spkr_concat_condition: bool = False,
                 t_scheduler: str = "cosine",
                 loss_type: str = "l2",
                 use_mdt: bool = False,
                 mel_framerate: int = 86,
                 *,
                 trans_dim: int | None = None,
                 depth: int | None = None,
                 heads: int | None = None,
                 dim_head: int = 64):
        super().__init__()
        self.mel_dim = mel_dim
        self.input_frame_rate = input_frame_rate
        self.mel_framerate = mel_framerate
        self.vocab_size = vocab_size
        self.spkr_emb_adaLN = spkr_emb_adaLN
        self.speech_token_cfg = speech_token_cfg
        self.use_wavlm_emb = use_wavlm_emb
        self.remove_spkr_concat_condition = remove_spkr_concat_condition
        self.t_scheduler = t_scheduler
        self.calc_prompt_mel_loss, self.loss_type, self.use_mdt = calc_prompt_mel_loss, loss_type, use_mdt
        self.inference_cfg_rate = 0.7
        if not remove_spkr_concat_condition:
            self.spk_embed_affine_layer = nn.Linear(SPEAKER_EMBED_DIM, spk_embed_dim)
        self.estimator = DiT(
            trans_dim=trans_dim if trans_dim is not None else (1024 if big_model else 768),
            depth=depth if depth is not None else (22 if big_model else 18),
            heads=heads if heads is not None else (16 if big_model else 12),
            dim_head=dim_head,
            ff_mult=2,
            mel_dim=mel_dim,
            text_vocab_size=vocab_size,
            text_emb_dim=speech_token_dim,
            conv_layers=4,
            condition_dim=mel_dim if remove_spkr_concat_condition else mel_dim + spk_embed_dim,
            spkr_emb_adaLN=spkr_emb_adaLN,
            wav_lm_emb=use_wavlm_emb,
        )

    # -- sizes ------------------------------------------------------------------------------------------------
    def frames_for(self, n_tokens: int) -> int:
        """Mel frames the model produces for ``n_tokens`` speech tokens (prompt + target counted together)."""
        return int(n_tokens / self.input_frame_rate * self.mel_framerate)

    @property
    def device(self) -> torch.device:
        return self.estimator.proj_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.estimator.proj_out.weight.dtype

    # -- sampling pieces ------------------------------------------------------------------------------------
    def time_grid(self, n_timesteps: int) -> torch.Tensor:
        """The n_timesteps + 1 flow times from 0 to 1 (cosine: 1 - cos(πs/2), denser near t = 0)."""
        s = torch.linspace(0, 1, n_timesteps + 1, device=self.device)
        return 1 - torch.cos(s * 0.5 * torch.pi) if self.t_scheduler == "cosine" else s

    def _prepare(self, prompt_token, prompt_feat, embedding, wavlm_emb):
        dev = self.device
        if prompt_token is None:
            prompt_token = torch.zeros(1, 0, dtype=torch.long)
        if prompt_feat is None:
            prompt_feat = torch.zeros(1, 0, self.mel_dim)
        prompt_token = torch.as_tensor(prompt_token).to(dev, torch.long).reshape(1, -1)
        prompt_feat = torch.as_tensor(prompt_feat).to(dev, torch.float32)
        if prompt_feat.dim() == 2:
            prompt_feat = prompt_feat.unsqueeze(0)
        if prompt_feat.shape[0] != 1 or prompt_feat.shape[-1] != self.mel_dim:
            raise ValueError(f"prompt_feat must be [1, frames, {self.mel_dim}], got {tuple(prompt_feat.shape)}")
        embedding = torch.as_tensor(embedding).to(dev, torch.float32).reshape(1, -1)
        if embedding.shape[1] != SPEAKER_EMBED_DIM:
            raise ValueError(f"embedding must be [1, {SPEAKER_EMBED_DIM}], got {tuple(embedding.shape)}")
        spk = F.normalize(embedding, dim=1)
        spk_cond = None
        if not self.remove_spkr_concat_condition:
            w = self.spk_embed_affine_layer.weight
            spk_cond = self.spk_embed_affine_layer(spk.to(w.dtype)).float()
        if self.use_wavlm_emb and wavlm_emb is not None:
            spk = torch.cat([spk, F.normalize(torch.as_tensor(wavlm_emb).to(dev, torch.float32).reshape(1, -1),
                                              dim=1)], dim=1)
        return prompt_token, prompt_feat, spk, spk_cond

    def _condition(self, prompt_feat, spk_cond, n_frames):
        mel = torch.zeros(1, n_frames, self.mel_dim, device=self.device)
        k = min(prompt_feat.shape[1], n_frames)
        if k:
            mel[:, :k] = prompt_feat[:, prompt_feat.shape[1] - k:]
        if spk_cond is None:
            return mel
        return torch.cat([mel, spk_cond.unsqueeze(1).expand(-1, n_frames, -1)], dim=-1)

    def _velocity(self, x, cond, tokens, t, spk, attn_mask):
        """Guided velocity: (1 + w) v(x | cond) - w v(x | ∅), both passes in one batch of 2."""
        w = self.inference_cfg_rate
        dt = self.dtype
        if w <= 0:
            return self.estimator(x.to(dt), cond.to(dt), tokens, t.expand(1), spk, attn_mask).float()
        tok_u = torch.zeros_like(tokens) if self.speech_token_cfg else tokens
        out = self.estimator(torch.cat([x, x]).to(dt), torch.cat([cond, torch.zeros_like(cond)]).to(dt),
                             torch.cat([tokens, tok_u]), t.expand(2),
                             torch.cat([spk, torch.zeros_like(spk)]), attn_mask).float()
        return (1.0 + w) * out[:1] - w * out[1:]

    def _solve(self, x, cond, tokens, spk, n_timesteps, attn_mask=None, pinned=None):
        """Euler integration from t=0 (noise ``x``) to t=1. ``pinned``: per-step input states of the first frames,
        written over ``x`` before each step. Returns (final x, list of per-step input states)."""
        grid = self.time_grid(n_timesteps)
        t, dt = grid[0], grid[1] - grid[0]
        x = x.clone()
        states = []
        for step in range(1, n_timesteps + 1):
            if pinned is not None and pinned[step - 1].shape[1]:
                x[:, :pinned[step - 1].shape[1]] = pinned[step - 1]
            states.append(x.clone())
            x = x + dt * self._velocity(x, cond, tokens, t.reshape(1), spk, attn_mask)
            t = t + dt
            if step < n_timesteps:
                dt = grid[step + 1] - t
        return x, states

    def attention_mask(self, attn_pattern: Sequence[int], n_frames: int) -> torch.Tensor:
        """Block-causal mask for token-count blocks ``attn_pattern`` (the first entry covers the prompt)."""
        return block_attention_mask([_mask_frames(b) for b in attn_pattern], n_frames, self.device)

    # -- public API -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def inference(self,
                  token: torch.Tensor,
                  prompt_token: torch.Tensor | None,
                  prompt_feat: torch.Tensor | None,
                  embedding: torch.Tensor,
                  n_timesteps: int = 10,
                  noise: torch.Tensor | None = None,
                  block_pattern: list[int] | None = None,
                  *,
                  lookahead: int | Sequence[int] = 0,
                  attn_pattern: list[int] | None = None,
                  wavlm_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Mel [1, mel_dim, frames] (float32) for the non-prompt part of ``prompt_token + token``.

        ``token`` [1, T], ``prompt_token`` [1, P] (or None), ``prompt_feat`` [1, Pm, mel_dim] (or None / empty; its
        last frames condition the first frames), ``embedding`` [1, 192] speaker embedding. The output has
        ``frames_for(P + T) - Pm`` frames. ``noise`` [1, ≥frames_for(P + T), mel_dim] makes the result deterministic
        (only its first frames are used); None draws it from torch's global RNG (on the CPU).

        ``block_pattern`` (token counts, last repeating) switches to block mode (see the module docstring): the
        frames of every complete block are final and equal to what :class:`FlowStream` produces chunk by chunk.
        ``lookahead`` (tokens, per block, last repeating) gives each block right context; ``attn_pattern`` overrides
        the attention block list (default ``[P] + block_pattern``).
        """
        token = torch.as_tensor(token).to(self.device, torch.long).reshape(1, -1)
        if block_pattern is not None:
            stream = FlowStream(self, prompt_token, prompt_feat, embedding, n_timesteps=n_timesteps,
                                block_pattern=block_pattern, lookahead=lookahead, noise=noise,
                                attn_pattern=attn_pattern, wavlm_emb=wavlm_emb)
            head = stream.push(token)
            return torch.cat([head, stream.finish()], dim=-1)
        prompt_token, prompt_feat, spk, spk_cond = self._prepare(prompt_token, prompt_feat, embedding, wavlm_emb)
        tokens = torch.cat([prompt_token, token], dim=1)
        n = self.frames_for(tokens.shape[1])
        x0 = _noise_prefix(noise, n, self.mel_dim, self.device)
        if n == 0:
            return torch.zeros(1, self.mel_dim, 0, device=self.device)
        mask = None if attn_pattern is None else self.attention_mask(attn_pattern, n)
        x, _ = self._solve(x0, self._condition(prompt_feat, spk_cond, n), tokens, spk, n_timesteps, mask)
        return x[:, prompt_feat.shape[1]:].transpose(1, 2).contiguous()

    def stream(self, prompt_token, prompt_feat, embedding, *, n_timesteps: int = 10,
               block_pattern: Sequence[int] = (25, 50, 200), lookahead: int | Sequence[int] = 0,
               noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
               attn_pattern: Sequence[int] | None = None, wavlm_emb=None) -> "FlowStream":
        """Incremental block-mode synthesis; see :class:`FlowStream`."""
        return FlowStream(self, prompt_token, prompt_feat, embedding, n_timesteps=n_timesteps,
                          block_pattern=block_pattern, lookahead=lookahead, noise=noise, generator=generator,
                          attn_pattern=attn_pattern, wavlm_emb=wavlm_emb)


def _noise_prefix(noise, n, mel_dim, device):
    if noise is None:
        return torch.randn(1, n, mel_dim).to(device)
    noise = torch.as_tensor(noise)
    if noise.dim() != 3 or noise.shape[0] != 1 or noise.shape[2] != mel_dim or noise.shape[1] < n:
        raise ValueError(f"noise must be [1, >= {n}, {mel_dim}], got {tuple(noise.shape)}")
    return noise[:, :n].to(device, torch.float32)


def _repeat_last(seq: int | Sequence[int], i: int) -> int:
    if isinstance(seq, int):
        return seq
    seq = list(seq)
    return int(seq[min(i, len(seq) - 1)])


class FlowStream:
    """Block-mode synthesis fed token by token.

    ``push(tokens)`` appends speech tokens and returns the mel [1, mel_dim, f] of every block that became final
    (f may be 0); ``finish()`` returns the rest (the last blocks, possibly partial, with whatever right context
    exists). The concatenation of all returned pieces equals ``Flow.inference(all tokens, ..., block_pattern=...)``
    for the same noise. State: per Euler step, the input states of the frames already produced (n_timesteps × frames
    × mel_dim floats) — freed by ``close()``.
    """

    def __init__(self, flow: Flow, prompt_token, prompt_feat, embedding, *, n_timesteps: int = 10,
                 block_pattern: Sequence[int] = (25, 50, 200), lookahead: int | Sequence[int] = 0,
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 attn_pattern: Sequence[int] | None = None, wavlm_emb=None):
        sizes = [int(b) for b in block_pattern]
        if not sizes or any(b <= 0 for b in sizes):
            raise ValueError(f"block_pattern must be positive token counts, got {block_pattern!r}")
        las = [lookahead] if isinstance(lookahead, int) else list(lookahead)
        if not las or any(int(a) < 0 for a in las):
            raise ValueError(f"lookahead must be >= 0, got {lookahead!r}")
        self.flow = flow
        self.n_timesteps = int(n_timesteps)
        self.sizes, self.lookahead = sizes, [int(a) for a in las]
        (self.prompt_token, self.prompt_feat, self.spk,
         self.spk_cond) = flow._prepare(prompt_token, prompt_feat, embedding, wavlm_emb)
        self.n_prompt = self.prompt_token.shape[1]
        self.attn_pattern = list(attn_pattern) if attn_pattern is not None else [self.n_prompt] + sizes
        self.tokens = self.prompt_token
        self.generator = generator
        self.noise = None if noise is None else torch.as_tensor(noise).to(flow.device, torch.float32)
        if self.noise is not None and (self.noise.dim() != 3 or self.noise.shape[0] != 1
                                       or self.noise.shape[2] != flow.mel_dim):
            raise ValueError(f"noise must be [1, frames, {flow.mel_dim}], got {tuple(self.noise.shape)}")
        self._drawn = self.noise is not None
        self.block = 0                      # index of the next block to produce
        self.done_tokens = 0                # non-prompt tokens covered by produced blocks
        self.done_frames = 0                # frames (from the start, prompt included) that are final
        self.emitted = self.prompt_feat.shape[1]   # next frame to hand out
        self.states: list[torch.Tensor] | None = None
        self.final = torch.zeros(1, 0, flow.mel_dim, device=flow.device)
        self.finished = False

    @property
    def n_target(self) -> int:
        return self.tokens.shape[1] - self.n_prompt

    def _noise(self, n: int) -> torch.Tensor:
        have = 0 if self.noise is None else self.noise.shape[1]
        if n > have:
            if self._drawn:
                raise ValueError(f"noise has {have} frames, {n} needed")
            extra = torch.randn(1, n - have, self.flow.mel_dim, generator=self.generator,
                                device=self.generator.device if self.generator is not None else "cpu")
            extra = extra.to(self.flow.device, torch.float32)
            self.noise = extra if self.noise is None else torch.cat([self.noise, extra], dim=1)
        return self.noise[:, :n]

    def _produce(self, end_tok: int, used_tok: int) -> None:
        """Sample block ``self.block`` = target tokens [done_tokens, end_tok) using tokens up to used_tok."""
        flow = self.flow
        n_used = flow.frames_for(self.n_prompt + used_tok)
        n_end = flow.frames_for(self.n_prompt + end_tok)
        tokens = self.tokens[:, :self.n_prompt + used_tok]
        if n_used > 0:
            cond = flow._condition(self.prompt_feat, self.spk_cond, n_used)
            mask = flow.attention_mask(self.attn_pattern, n_used)
            x, states = flow._solve(self._noise(n_used), cond, tokens, self.spk, self.n_timesteps, mask,
                                    pinned=self.states)
            self.states = [s[:, :n_end].clone() for s in states]
            self.final = torch.cat([self.final, x[:, self.done_frames:n_end]], dim=1)
        self.done_frames = max(self.done_frames, n_end)
        self.done_tokens = end_tok
        self.block += 1

    def _take(self) -> torch.Tensor:
        out = self.final[:, self.emitted:].transpose(1, 2).contiguous()
        self.emitted = max(self.emitted, self.final.shape[1])
        return out

    @torch.inference_mode()
    def push(self, tokens) -> torch.Tensor:
        if self.finished:
            raise RuntimeError("push() after finish()")
        tokens = torch.as_tensor(tokens).to(self.flow.device, torch.long).reshape(1, -1)
        self.tokens = torch.cat([self.tokens, tokens], dim=1)
        while True:
            end = self.done_tokens + _repeat_last(self.sizes, self.block)
            used = end + _repeat_last(self.lookahead, self.block)
            if used > self.n_target:
                break
            self._produce(end, used)
        return self._take()

    @torch.inference_mode()
    def finish(self) -> torch.Tensor:
        if not self.finished:
            self.finished = True
            while self.done_tokens < self.n_target:
                end = min(self.done_tokens + _repeat_last(self.sizes, self.block), self.n_target)
                self._produce(end, self.n_target)
            if self.block == 0:             # no target tokens at all: the prompt region only
                self._produce(0, 0)
        out = self._take()
        return out

    def close(self) -> None:
        self.states = None
        self.noise = None
        self.final = torch.zeros(1, 0, self.flow.mel_dim)
        self.finished = True


# ---------------------------------------------------------------------------------------------------------------
# checkpoint directory: config.yaml + flow.pt
# ---------------------------------------------------------------------------------------------------------------

class _Tagged:
    def __init__(self, tag: str, value: Any):
        self.tag, self.value = tag, value

    def __repr__(self):
        return f"_Tagged({self.tag!r}, {self.value!r})"


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that keeps hyperpyyaml tags (``!new:…``, ``!name:…``, ``!ref``, ``!apply:…``…) as ``_Tagged``."""


def _construct_tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return _Tagged("!" + tag_suffix, value)


_ConfigLoader.add_multi_constructor("!", _construct_tagged)
# hyperpyyaml reads YAML 1.2, where "1e-5" is a float (YAML 1.1 / PyYAML would keep it a string)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))

_REF = re.compile(r"<([^<>]+)>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _lookup(root: dict, path: str, seen: set) -> Any:
    cur: Any = root
    for part in re.split(r"[.\[\]]+", path.strip()):
        if not part:
            continue
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(f"unresolvable reference <{path}>")
        cur = cur[part]
    return _resolve(cur, root, seen | {path})


def _arith(expr: str) -> Any:
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"unsupported expression {expr!r}")
    return ev(ast.parse(expr, mode="eval"))


def _resolve(value: Any, root: dict, seen: set = frozenset()) -> Any:
    if isinstance(value, _Tagged) and value.tag == "!ref":
        text = str(value.value).strip()
        whole = _REF.fullmatch(text)
        if whole:
            if whole.group(1) in seen:
                raise ValueError(f"circular reference <{whole.group(1)}>")
            return _lookup(root, whole.group(1), set(seen))
        return _arith(_REF.sub(lambda m: repr(_lookup(root, m.group(1), set(seen))), text))
    if isinstance(value, dict):
        return {k: _resolve(v, root, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root, seen) for v in value]
    return value


def read_flow_config(path: str | Path) -> dict:
    """Flow constructor kwargs from a hyperpyyaml ``config.yaml`` whose top-level ``flow`` is ``!new:flow.flow.Flow``
    (simple ``!ref <key>`` references and arithmetic on them are resolved)."""
    path = Path(path)
    if not path.is_file():
        raise FlowCheckpointError(f"flow config not found: {path}")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as e:
        raise FlowCheckpointError(f"{path}: not valid YAML: {e}") from e
    node = doc.get("flow") if isinstance(doc, dict) else None
    if not isinstance(node, _Tagged) or node.tag != FLOW_TAG:
        raise FlowCheckpointError(f"{path}: expected a top-level 'flow: {FLOW_TAG}' entry")
    kwargs = node.value if node.value not in (None, "") else {}
    if not isinstance(kwargs, dict):
        raise FlowCheckpointError(f"{path}: the {FLOW_TAG} entry must be a mapping of keyword arguments")
    try:
        kwargs = _resolve(kwargs, doc)
    except (KeyError, ValueError) as e:
        raise FlowCheckpointError(f"{path}: {e}") from e
    if any(isinstance(v, _Tagged) for v in kwargs.values()):
        raise FlowCheckpointError(f"{path}: unsupported tag in Flow arguments: {kwargs}")
    return kwargs


def load_flow(flow_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              *, allow_pickle: bool = False) -> Flow:
    """Build :class:`Flow` from ``flow_dir/config.yaml`` and load ``flow_dir/flow.pt`` strictly (a state dict, or a
    dict holding it under "model"). ``allow_pickle`` permits a full-pickle ``torch.load`` for checkpoints that also
    hold non-tensor objects (only for files you trust)."""
    flow_dir = Path(flow_dir)
    cfg_path, ckpt_path = flow_dir / "config.yaml", flow_dir / "flow.pt"
    kwargs = read_flow_config(cfg_path)
    if not ckpt_path.is_file():
        raise FlowCheckpointError(f"flow weights not found: {ckpt_path}")
    try:
        model = Flow(**kwargs)
    except (TypeError, ValueError) as e:
        raise FlowCheckpointError(f"{cfg_path}: cannot build Flow: {e}") from e
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad checkpoint file
        hint = "" if allow_pickle else " (if it is a trusted file holding other objects, use allow_pickle=True)"
        raise FlowCheckpointError(f"{ckpt_path}: cannot be read as a torch state dict{hint}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise FlowCheckpointError(f"{ckpt_path}: expected a state dict, got {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FlowCheckpointError(f"{ckpt_path} does not match {cfg_path}: {e}") from e
    return model.to(device=device, dtype=dtype).eval()


def write_tiny_flow(flow_dir: str | Path, *, vocab_size: int, trans_dim: int, depth: int, heads: int,
                    seed: int = 0, dim_head: int = 64, speech_token_dim: int = 32, spk_embed_dim: int = 80,
                    mel_dim: int = 80, input_frame_rate: float = 25, mel_framerate: int = 50,
                    spkr_emb_adaLN: bool = False, use_wavlm_emb: bool = False,
                    remove_spkr_concat_condition: bool = False, speech_token_cfg: bool = True,
                    t_scheduler: str = "cosine", init_std: float = 0.02, wrap_model_key: bool = False) -> Path:
    """Write a randomly initialised checkpoint directory (``config.yaml`` + ``flow.pt``) in the published layout.
    The config carries our size overrides (trans_dim, depth, heads, dim_head), which only :func:`load_flow` reads.
    Weights are N(0, init_std) (biases and norm parameters included), so the zero-initialised response-norm and
    other parameters are exercised too. Returns the directory."""
    flow_dir = Path(flow_dir)
    flow_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(speech_token_dim=speech_token_dim, vocab_size=vocab_size, input_frame_rate=input_frame_rate,
                  spk_embed_dim=spk_embed_dim, mel_dim=mel_dim, big_model=False, spkr_emb_adaLN=spkr_emb_adaLN,
                  speech_token_cfg=speech_token_cfg, use_wavlm_emb=use_wavlm_emb,
                  remove_spkr_concat_condition=remove_spkr_concat_condition, t_scheduler=t_scheduler,
                  mel_framerate=mel_framerate, trans_dim=trans_dim, depth=depth, heads=heads, dim_head=dim_head)
    gen = torch.Generator().manual_seed(seed)
    model = Flow(**kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("text_embed.weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * init_std)
    lines = ["# tiny random GLM-TTS-layout flow checkpoint (test fixture)", f"flow: {FLOW_TAG}"]
    lines += [f"    {k}: {yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
              for k, v in kwargs.items()]
    (flow_dir / "config.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    state = model.state_dict()
    torch.save({"model": state} if wrap_model_key else state, flow_dir / "flow.pt")
    return flow_dir

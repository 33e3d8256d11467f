"""The per-stream attention step the paged one replaced, kept only to check and measure it against.

``ContiguousKV`` is one stream's cache as contiguous per-layer buffers (grown by reallocating and copying);
``per_stream_forward`` runs the model's projections and MLP once over all new tokens, like
``SpeechLM.packed_forward``, but attention as a Python loop: per layer and per stream one copy of K, one of V and
one ``scaled_dot_product_attention`` call. The unit tests compare logits against it and ``make bench-decoder``
measures both in the same run. Nothing in the engine uses it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .lm import SpeechLM, rope


class ContiguousKV:
    BLOCK = 128

    def __init__(self, lm: SpeechLM, max_tokens: int = 0):
        self.lm = lm
        self.max_tokens = max_tokens
        self.length = self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def reserve(self, n: int) -> None:
        if n <= self.capacity:
            return
        cap = int(math.ceil(max(n, 2 * self.capacity, self.BLOCK) / self.BLOCK) * self.BLOCK)
        if self.max_tokens:
            cap = max(n, min(cap, self.max_tokens))
        shape = (self.lm.kv_heads, cap, self.lm.head_dim)
        new = [torch.empty(shape, dtype=self.lm.dtype, device=self.lm.device) for _ in range(2 * self.lm.n_layers)]
        for old, fresh in zip(self.k + self.v, new):
            fresh[:, : self.length].copy_(old[:, : self.length])
        self.k, self.v, self.capacity = new[: self.lm.n_layers], new[self.lm.n_layers:], cap

    def crop(self, n: int) -> None:
        self.length = min(self.length, max(0, n))

    def free(self) -> None:
        self.k, self.v, self.capacity, self.length = [], [], 0, 0


class PerStreamLM:
    """A :class:`SpeechLM` whose caches and step are the per-stream ones, for the scheduler in the benchmark. It
    also samples stream by stream (``sample`` per row, as the scheduler did before ``SpeechLM.sample_batch``), so
    the benchmark's baseline is the whole pass as it was before the paged step (issue 17's "today")."""

    sample_batch = None

    def __init__(self, lm: SpeechLM):
        self._lm = lm

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def new_cache(self, max_tokens: int = 0) -> ContiguousKV:
        return ContiguousKV(self._lm, max_tokens)

    def packed_forward(self, items):
        return per_stream_forward(self._lm, items)


@torch.inference_mode()
def per_stream_forward(lm: SpeechLM, items: list[tuple[ContiguousKV, list[int]]]) -> torch.Tensor:
    inner = lm.model.model
    lengths = [len(ids) for _, ids in items]
    starts = [kv.length for kv, _ in items]
    for (kv, _), n, s in zip(items, lengths, starts):
        kv.reserve(s + n)
    flat = torch.tensor([t for _, ids in items for t in ids], dtype=torch.long, device=lm.device)
    pos = torch.tensor([s + i for s, n in zip(starts, lengths) for i in range(n)], device=lm.device)
    h = inner.embed_tokens(flat)[None]
    cos, sin = inner.rotary_emb(h, pos[None])
    cos, sin = cos[0][:, None, :], sin[0][:, None, :]
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    for li, layer in enumerate(inner.layers):
        attn = layer.self_attn
        x = layer.input_layernorm(h)[0]
        q = attn.q_proj(x).view(-1, lm.n_heads, lm.head_dim)
        k = attn.k_proj(x).view(-1, lm.kv_heads, lm.head_dim)
        v = attn.v_proj(x).view(-1, lm.kv_heads, lm.head_dim)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        outs = []
        for i, (kv, _) in enumerate(items):
            a, b, s = offsets[i], offsets[i + 1], starts[i]
            kv.k[li][:, s: s + b - a] = k[a:b].transpose(0, 1)
            kv.v[li][:, s: s + b - a] = v[a:b].transpose(0, 1)
            K, V = kv.k[li][:, : s + b - a], kv.v[li][:, : s + b - a]
            mask = None
            if b - a > 1:
                qpos = torch.arange(s, s + b - a, device=lm.device)[:, None]
                mask = torch.arange(s + b - a, device=lm.device)[None, :] <= qpos
            o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1)[None], K[None], V[None], attn_mask=mask,
                                               scale=attn.scaling, enable_gqa=lm.kv_heads != lm.n_heads)
            outs.append(o[0].transpose(0, 1).reshape(b - a, -1))
        h = h + attn.o_proj(torch.cat(outs))[None]
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    for (kv, _), s, n in zip(items, starts, lengths):
        kv.length = s + n
    last = torch.tensor([o - 1 for o in offsets[1:]], device=lm.device)
    return lm.model.lm_head(inner.norm(h[0, last])).float()

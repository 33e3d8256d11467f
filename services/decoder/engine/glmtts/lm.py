"""The speech-token language model: a transformers Llama checkpoint, stepped by our own packed forward.

The weights, tokenizer and configuration are loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer`` from the
checkpoint's ``llm/`` and tokenizer directories. Decoding does not go through ``model.generate``: the pod's scheduler
steps many streams at once, each with its own KV cache (:class:`StreamKV`), and possibly a prefill of one stream in
the same pass as single-token steps of others. ``packed_forward`` runs the model's own modules (embeddings,
projections, RMSNorm, rotary embedding, MLP, LM head) over all new tokens packed into one matrix, and attends per
stream over that stream's cache, so the dense work is batched and no cache is ever copied or padded.

``full_forward`` is the no-cache path (transformers' own forward over the whole sequence); tests check that both give
the same tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

SPECIAL_TOKENS = {
    "ats": "<|audio_0|>",          # first speech token
    "ate": "<|audio_32767|>",      # last speech token
    "boa": "<|begin_of_audio|>",
    "eoa": "<|user|>",             # the published checkpoint ends audio with this token
    "pad": "<|endoftext|>",
}


class StreamKV:
    """One stream's KV cache: per layer, K and V buffers ``[kv_heads, capacity, head_dim]`` grown in blocks.

    ``length`` tokens are valid. Growing reallocates (rare: capacity doubles); cropping is free. ``free()`` drops
    the buffers at once.
    """

    BLOCK = 128

    def __init__(self, n_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 max_tokens: int = 0):
        self.n_layers, self.kv_heads, self.head_dim = n_layers, kv_heads, head_dim
        self.max_tokens = max_tokens             # capacity never grows past this (0 = no limit): the pod's budget
        self.dtype, self.device = dtype, device
        self.length = 0
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def reserve(self, n: int) -> None:
        if n <= self.capacity:
            return
        cap = max(n, 2 * self.capacity, self.BLOCK)
        cap = int(math.ceil(cap / self.BLOCK) * self.BLOCK)
        if self.max_tokens:
            cap = max(n, min(cap, self.max_tokens))
        shape = (self.kv_heads, cap, self.head_dim)
        new_k = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.n_layers)]
        new_v = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.n_layers)]
        for old, new in zip(self.k + self.v, new_k + new_v):
            new[:, : self.length].copy_(old[:, : self.length])
        self.k, self.v, self.capacity = new_k, new_v, cap

    def crop(self, n: int) -> None:
        self.length = min(self.length, max(0, n))

    def free(self) -> None:
        self.k, self.v, self.capacity, self.length = [], [], 0, 0


@dataclass
class SamplingParams:
    top_k: int = 25
    top_p: float = 0.8
    temperature: float = 1.0
    ras_window: int = 10          # repetition-aware sampling: look at the last N tokens...
    ras_tau: float = 0.1          # ...and fall back to plain sampling when the pick repeats >= N * tau times
    greedy: bool = False


class SpeechLM:
    """A Llama LM whose vocabulary holds text tokens and 32768 speech tokens (25 per second of audio)."""

    def __init__(self, model, tokenizer, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        cfg = model.config
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 0) or 0)
        self.ids = self._special_ids()
        self.ats, self.ate, self.boa, self.eoa = (self.ids[k] for k in ("ats", "ate", "boa", "eoa"))
        self.n_speech = self.ate - self.ats + 1
        if self.model.lm_head.out_features <= self.ate:
            raise ValueError(f"llm: vocabulary size {self.model.lm_head.out_features} does not hold the speech "
                             f"tokens (ids {self.ats}..{self.ate} from the tokenizer)")

    # -- loading ------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, llm_dir: str | Path, tokenizer_dir: str | Path, device="cpu", dtype=torch.float32,
             trust_remote_code: bool = False) -> "SpeechLM":
        from transformers import AutoModelForCausalLM

        from .text_tokenizer import load_tokenizer

        llm_dir, tokenizer_dir = Path(llm_dir), Path(tokenizer_dir)
        for d, what in ((llm_dir, "LLM"), (tokenizer_dir, "tokenizer")):
            if not d.is_dir():
                raise FileNotFoundError(f"glmtts checkpoint: {what} directory {d} is missing")
        tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=dtype, attn_implementation="sdpa")
        if getattr(model.config, "model_type", "") != "llama":
            raise ValueError(f"{llm_dir}: model_type {model.config.model_type!r}; the glmtts engine runs Llama")
        return cls(model, tokenizer, device=device, dtype=dtype)

    def _special_ids(self) -> dict[str, int]:
        ids = {}
        for key, text in SPECIAL_TOKENS.items():
            enc = self.tokenizer.encode(text, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(f"tokenizer: special token {text} ({key}) encodes to {len(enc)} ids, expected 1")
            ids[key] = enc[0]
        if ids["ate"] - ids["ats"] != 32767:
            raise ValueError("tokenizer: speech tokens <|audio_0|>..<|audio_32767|> are not contiguous ids")
        return ids

    # -- text ---------------------------------------------------------------------------------------------------

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def has_tokens(self, texts: list[str]) -> bool:
        """Whether every one of ``texts`` is a single token of the vocabulary."""
        return all(len(self.tokenizer.encode(t, add_special_tokens=False)) == 1 for t in texts)

    def speech_ids(self, tokens: list[int]) -> list[int]:
        """Speech token numbers (0..32767) → vocabulary ids."""
        return [self.ats + t for t in tokens]

    # -- cache --------------------------------------------------------------------------------------------------

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()

    def new_cache(self, max_tokens: int = 0) -> StreamKV:
        return StreamKV(self.n_layers, self.kv_heads, self.head_dim, self.dtype, self.device, max_tokens)

    # -- forward ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def packed_forward(self, items: list[tuple[StreamKV, list[int]]]) -> torch.Tensor:
        """Append each item's new ``ids`` to its cache and return the next-token logits ``[len(items), vocab]``.

        Items may mix long prefills with single-token steps; every projection and MLP runs once over all new
        tokens; attention runs per stream over ``cache[:length + new]`` with a causal mask inside the new part.
        """
        inner = self.model.model
        lengths = [len(ids) for _, ids in items]
        starts = [kv.length for kv, _ in items]
        for (kv, _), n, s in zip(items, lengths, starts):
            kv.reserve(s + n)
        flat = torch.tensor([t for _, ids in items for t in ids], dtype=torch.long, device=self.device)
        pos = torch.tensor([s + i for s, n in zip(starts, lengths) for i in range(n)], device=self.device)
        h = inner.embed_tokens(flat)[None]                       # [1, N, D]
        cos, sin = inner.rotary_emb(h, pos[None])                # [1, N, hd]
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]        # [N, 1, hd] broadcast over heads
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        masks = {}
        for li, layer in enumerate(inner.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)[0]                      # [N, D]
            q = attn.q_proj(x).view(-1, self.n_heads, self.head_dim)
            k = attn.k_proj(x).view(-1, self.kv_heads, self.head_dim)
            v = attn.v_proj(x).view(-1, self.kv_heads, self.head_dim)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            outs = []
            for i, (kv, _) in enumerate(items):
                a, b, s = offsets[i], offsets[i + 1], starts[i]
                kv.k[li][:, s: s + b - a] = k[a:b].transpose(0, 1)
                kv.v[li][:, s: s + b - a] = v[a:b].transpose(0, 1)
                K, V = kv.k[li][:, : s + b - a], kv.v[li][:, : s + b - a]
                mask = None
                if b - a > 1:
                    mask = masks.get(i)
                    if mask is None:
                        qpos = torch.arange(s, s + b - a, device=self.device)[:, None]
                        mask = masks[i] = torch.arange(s + b - a, device=self.device)[None, :] <= qpos
                o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1)[None], K[None], V[None], attn_mask=mask,
                                                   scale=attn.scaling, enable_gqa=self.kv_heads != self.n_heads)
                outs.append(o[0].transpose(0, 1).reshape(b - a, -1))
            h = h + attn.o_proj(torch.cat(outs))[None]
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        for (kv, _), s, n in zip(items, starts, lengths):
            kv.length = s + n
        last = torch.tensor([o - 1 for o in offsets[1:]], device=self.device)
        h = inner.norm(h[0, last])
        return self.model.lm_head(h).float()

    @torch.inference_mode()
    def full_forward(self, ids: list[int]) -> torch.Tensor:
        """No KV cache: transformers' forward over the whole sequence; next-token logits ``[vocab]``."""
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False,
                         logits_to_keep=1)
        return out.logits[0, -1].float()

    # -- sampling -----------------------------------------------------------------------------------------------

    def sample(self, logits: torch.Tensor, history: list[int], params: SamplingParams,
               generator: torch.Generator | None, allow_end: bool) -> int:
        """Pick the next token among the speech tokens and end-of-audio.

        Returns a speech token number (0..32767), or -1 for end-of-audio. Top-k / top-p (nucleus) sampling, with
        repetition-aware sampling: when the pick already occurs often in the recent window, draw again from the
        whole distribution (this breaks the loops LM-based TTS falls into).
        """
        speech = logits[self.ats: self.ate + 1]
        end = logits[self.eoa: self.eoa + 1] if allow_end else torch.full((1,), -math.inf, device=logits.device)
        scores = torch.cat([speech, end.to(speech.dtype)])
        if params.greedy:
            pick = int(torch.argmax(scores))
        else:
            probs = torch.softmax(scores / max(params.temperature, 1e-5), dim=-1)
            pick = _nucleus(probs, params.top_k, params.top_p, generator)
            window = history[-params.ras_window:]
            if window and window.count(pick) >= params.ras_window * params.ras_tau:
                pick = int(torch.multinomial(probs, 1, generator=generator))
        return -1 if pick == self.n_speech else pick


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _nucleus(probs: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> int:
    values, idx = torch.topk(probs, min(top_k, probs.numel()))
    keep = (torch.cumsum(values, 0) - values) < top_p      # keep while the mass before this one is below top_p
    keep[0] = True
    values, idx = values[keep], idx[keep]
    return int(idx[torch.multinomial(values, 1, generator=generator)])

"""The speech-token language model: a transformers Llama checkpoint, stepped by our own packed forward.

The weights, tokenizer and configuration are loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer`` from the
checkpoint's ``llm/`` and tokenizer directories. Decoding does not go through ``model.generate``: the pod's scheduler
steps many streams at once, each with its blocks of the pod's paged KV cache (:mod:`.kv_cache`), and prefills of
some streams in the same pass as single-token steps of others. ``packed_forward`` runs the model's own weights and
modules (embeddings, projections, RMSNorm, rotary embedding, MLP, LM head) over all new tokens packed into one
matrix, and per layer ONE attention call for all streams of the pass (see ``packed_forward``).

``full_forward`` is the no-cache path (transformers' own forward over the whole sequence); tests check that both give
the same tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .kv_cache import KVPool, StreamKV, blocks_for

SPECIAL_TOKENS = {
    "ats": "<|audio_0|>",          # first speech token
    "ate": "<|audio_32767|>",      # last speech token
    "boa": "<|begin_of_audio|>",
    "eoa": "<|user|>",             # the published checkpoint ends audio with this token
    "pad": "<|endoftext|>",
}


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

    BLOCK_SIZE = 16               # tokens per KV block

    def __init__(self, model, tokenizer, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 block_size: int = BLOCK_SIZE):
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
        self.block_size = block_size
        self.pool: KVPool | None = None
        self._fuse_projections()
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

    @property
    def block_bytes(self) -> int:
        return self.block_size * self.bytes_per_token

    def allocate_cache(self, n_blocks: int) -> KVPool:
        """The pod's KV pool, once, at warm-up: ``n_blocks`` blocks of ``block_size`` tokens (replaces any
        earlier pool; streams holding blocks of that one must be gone)."""
        self.pool = KVPool(self.n_layers, self.kv_heads, self.head_dim, n_blocks, self.block_size, self.dtype,
                           self.device)
        return self.pool

    def blocks_for(self, n_tokens: int) -> int:
        return blocks_for(n_tokens, self.block_size)

    def new_cache(self, max_tokens: int = 0) -> StreamKV:
        if self.pool is None:
            raise RuntimeError("SpeechLM.allocate_cache() must size the KV pool before streams take blocks")
        return StreamKV(self.pool, max_tokens)

    # -- forward ------------------------------------------------------------------------------------------------

    def _fuse_projections(self) -> None:
        """Per layer one [q; k; v] and one [gate; up] weight matrix (one matmul each instead of three and two).
        The modules' own weights become views into them, so transformers' forward reads the same memory."""
        self._qkv, self._gate_up = [], []
        for layer in self.model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            groups = [(attn, ("q_proj", "k_proj", "v_proj"), self._qkv), (mlp, ("gate_proj", "up_proj"), self._gate_up)]
            for module, names, out in groups:
                parts = [getattr(module, n) for n in names]
                if any(p.bias is not None for p in parts):
                    out.append(None)
                    continue
                fused = torch.cat([p.weight.detach() for p in parts])
                row = 0
                for p in parts:
                    n = p.weight.shape[0]
                    p.weight = torch.nn.Parameter(fused[row: row + n], requires_grad=False)
                    row += n
                out.append(fused)

    def _plan(self, items: list[tuple[StreamKV, list[int]]]) -> "_Plan":
        """Index tensors shared by every layer of one pass: slots of the new tokens, and per attention group the
        block table, query layout and mask. Single-token steps form one group and prefills another, so a long
        prefill does not pad every other stream's one query to its length (see ``packed_forward``)."""
        bs = self.block_size
        starts = [kv.length for kv, _ in items]
        lengths = [len(ids) for _, ids in items]
        for (kv, _), s, n in zip(items, starts, lengths):
            if n < 1:
                raise ValueError("packed_forward: every item needs at least one new id")
            kv.reserve(s + n)
        slots, offsets = [], [0]
        for (kv, _), s, n in zip(items, starts, lengths):
            slots += [kv.blocks[p // bs] * bs + p % bs for p in range(s, s + n)]
            offsets.append(offsets[-1] + n)
        steps = [i for i, n in enumerate(lengths) if n == 1]
        prefills = [i for i, n in enumerate(lengths) if n > 1]
        members = [g for g in (steps, prefills) if g]
        groups = [self._group(items, g, starts, lengths, offsets, whole=len(members) == 1) for g in members]
        return _Plan(torch.tensor(slots, device=self.device), groups, [s + n for s, n in zip(starts, lengths)])

    def _group(self, items, members: list[int], starts, lengths, offsets, whole: bool) -> "_Group":
        bs, dev = self.block_size, self.device
        n_q = max(lengths[i] for i in members)
        n_blk = max(blocks_for(starts[i] + lengths[i], bs) for i in members)
        table, tokens, rows = [], [], []
        for r, i in enumerate(members):
            used = items[i][0].blocks[: blocks_for(starts[i] + lengths[i], bs)]
            table += used + [used[0]] * (n_blk - len(used))          # padding blocks are masked out
            tokens += range(offsets[i], offsets[i + 1])
            rows += range(r * n_q, r * n_q + lengths[i])
        if len(members) == 1 and n_q == 1:
            used = items[members[0]][0].blocks[:n_blk]
            if used == list(range(used[0], used[0] + n_blk)):
                # one stream, one query, its blocks side by side in the pool (the usual case for a lone stream):
                # its keys are a view of the pool cut to its length, no gather and no mask
                return _Group(1, 1, starts[members[0]] + 1, None,
                              None if whole else torch.tensor(tokens, device=dev), None, None, span=(used[0], n_blk))
        start = torch.tensor([starts[i] for i in members], device=dev)[:, None]
        n_new = torch.tensor([lengths[i] for i in members], device=dev)[:, None]
        # query j of a stream sits at position start + j; padding queries (j >= its new ids) repeat its last one
        qpos = start + torch.minimum(torch.arange(n_q, device=dev)[None, :], n_new - 1)
        mask = torch.arange(n_blk * bs, device=dev)[None, None, :] <= qpos[:, :, None]      # [streams, n_q, keys]
        return _Group(len(members), n_q, n_blk * bs, torch.tensor(table, device=dev),
                      None if whole else torch.tensor(tokens, device=dev),
                      None if n_q == 1 else torch.tensor(rows, device=dev), mask[:, None])

    @torch.inference_mode()
    def packed_forward(self, items: list[tuple[StreamKV, list[int]]]) -> torch.Tensor:
        """Append each item's new ``ids`` to its cache and return the next-token logits ``[len(items), vocab]``.

        Items may mix prefills of any length with single-token steps. Every projection and MLP runs once over all
        new tokens packed into one matrix. Attention does not loop over streams: per layer the new K/V are written
        into their pool slots (one ``index_copy_``), and ONE ``scaled_dot_product_attention`` call serves all
        single-token steps of the pass — their blocks gathered by block table into ``[streams, kv_heads, keys,
        head_dim]`` (one ``index_select`` on the heads-first pool, keys padded to the longest stream and
        masked). Prefills in the same
        pass get one more call among themselves (queries ``[streams, heads, longest prefill, head_dim]``, causal
        mask): in one call with the steps, every step's single query would be padded to the prefill's length
        (measured here: a pass of 32 steps and one 150-token prefill ran 2.7x slower than the per-stream loop).
        So a pass makes 1 or 2 attention calls per layer however many streams it holds.
        """
        inner = self.model.model
        plan = self._plan(items)
        flat = torch.tensor([t for _, ids in items for t in ids], dtype=torch.long, device=self.device)
        pos = torch.tensor([p for (kv, ids), e in zip(items, plan.ends) for p in range(e - len(ids), e)],
                           device=self.device)
        h = inner.embed_tokens(flat)                             # [N, D]
        cos, sin = inner.rotary_emb(h[None], pos[None])          # [1, N, hd]
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]        # [N, 1, hd] broadcast over heads
        nq, nkv = self.n_heads * self.head_dim, self.kv_heads * self.head_dim
        pool = self.pool
        for li, layer in enumerate(inner.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            if self._qkv[li] is not None:
                q, k, v = F.linear(x, self._qkv[li]).split((nq, nkv, nkv), dim=-1)
            else:
                q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
            q = rope(q.reshape(-1, self.n_heads, self.head_dim), cos, sin)
            k = rope(k.reshape(-1, self.kv_heads, self.head_dim), cos, sin)
            v = v.reshape(-1, self.kv_heads, self.head_dim)
            pk, pv = pool.k[li], pool.v[li]                      # [kv_heads, blocks, block_size, hd]
            pk.view(self.kv_heads, -1, self.head_dim).index_copy_(1, plan.slots, k.transpose(0, 1))
            pv.view(self.kv_heads, -1, self.head_dim).index_copy_(1, plan.slots, v.transpose(0, 1))
            if len(plan.groups) == 1:
                o = self._attend(plan.groups[0], q, pk, pv, attn.scaling)
            else:
                o = q.new_empty(q.shape[0], nq)
                for g in plan.groups:
                    o.index_copy_(0, g.tokens, self._attend(g, q, pk, pv, attn.scaling))
            h = h + attn.o_proj(o)
            x = layer.post_attention_layernorm(h)
            mlp = layer.mlp
            if self._gate_up[li] is not None:
                gate, up = F.linear(x, self._gate_up[li]).chunk(2, dim=-1)
                h = h + mlp.down_proj(mlp.act_fn(gate) * up)
            else:
                h = h + mlp(x)
        for (kv, _), e in zip(items, plan.ends):
            kv.length = e
        last = torch.tensor([len(ids) for _, ids in items], device=self.device).cumsum(0) - 1
        return self._logits(inner.norm(h[last]))

    def _attend(self, g: "_Group", q: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, scale: float) -> torch.Tensor:
        """One attention call for the streams of group ``g``: their blocks gathered by block table, their queries
        laid out ``[streams, heads, n_q, head_dim]``; returns ``[their new tokens, heads × head_dim]``."""
        kvh, hd, H = self.kv_heads, self.head_dim, self.n_heads
        if g.span is not None:
            a, n = g.span
            K = pk[:, a: a + n].reshape(kvh, -1, hd)[None, :, : g.n_keys]
            V = pv[:, a: a + n].reshape(kvh, -1, hd)[None, :, : g.n_keys]
        else:
            K = pk.index_select(1, g.table).view(kvh, g.batch, g.n_keys, hd).transpose(0, 1)  # [batch, kvh, keys, hd]
            V = pv.index_select(1, g.table).view(kvh, g.batch, g.n_keys, hd).transpose(0, 1)
        if g.tokens is not None:
            q = q.index_select(0, g.tokens)
        if g.rows is None:
            Q = q.view(g.batch, 1, H, hd)
        else:
            Q = q.new_zeros(g.batch * g.n_q, H, hd).index_copy_(0, g.rows, q).view(g.batch, g.n_q, H, hd)
        o = F.scaled_dot_product_attention(Q.transpose(1, 2), K, V, attn_mask=g.mask, scale=scale,
                                           enable_gqa=kvh != H)
        o = o.transpose(1, 2).reshape(g.batch * g.n_q, H * hd)
        return o if g.rows is None else o.index_select(0, g.rows)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        head = self.model.lm_head
        if head.bias is not None or h.shape[0] == 1:
            return head(h).float()
        # rows × a vocabulary-sized matrix: as W @ hᵀ the BLAS streams the big weight once in its own layout;
        # F.linear's h @ Wᵀ ran 1.3-1.7x slower here with 8-32 rows (measured on this CPU, MKL, fp32)
        return torch.mm(head.weight, h.t()).t().float()

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


    def sample_batch(self, logits: torch.Tensor, histories: list[list[int]], params: list[SamplingParams],
                     generators: list[torch.Generator | None], allow_end: list[bool]) -> list[int]:
        """:meth:`sample` for every row of ``logits`` ``[streams, vocab]`` at once, each row with its own history,
        parameters and generator; row ``r`` gets the token ``sample(logits[r], histories[r], ...)`` would give
        (same ops per row, same draws from the same generator). The score slicing, softmax, top-k and nucleus cut
        run once per group of rows sharing their parameters; only the draws stay per row, as each stream's
        generator must give that stream's seeded sequence."""
        n = logits.shape[0]
        end = logits[:, self.eoa: self.eoa + 1].clone()
        barred = [r for r in range(n) if not allow_end[r]]
        if barred:
            end[barred] = -math.inf
        scores = torch.cat([logits[:, self.ats: self.ate + 1], end], dim=1)
        groups: dict[tuple, list[int]] = {}
        for r, p in enumerate(params):
            groups.setdefault((p.greedy, p.temperature, p.top_k, p.top_p), []).append(r)
        picks = [0] * n
        for (greedy, temperature, top_k, top_p), rows in groups.items():
            sub = scores if len(rows) == n else scores[rows]
            if greedy:
                for r, pick in zip(rows, torch.argmax(sub, dim=1).tolist()):
                    picks[r] = pick
                continue
            probs = torch.softmax(sub / max(temperature, 1e-5), dim=-1)
            values, idx = torch.topk(probs, min(top_k, probs.shape[1]), dim=1)
            keep = (torch.cumsum(values, 1) - values) < top_p
            keep[:, 0] = True
            for j, r in enumerate(rows):
                kept = keep[j]
                pick = int(idx[j][kept][torch.multinomial(values[j][kept], 1, generator=generators[r])])
                p = params[r]
                window = histories[r][-p.ras_window:]
                if window and window.count(pick) >= p.ras_window * p.ras_tau:
                    pick = int(torch.multinomial(probs[j], 1, generator=generators[r]))
                picks[r] = pick
        return [-1 if pick == self.n_speech else pick for pick in picks]


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _nucleus(probs: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> int:
    values, idx = torch.topk(probs, min(top_k, probs.numel()))
    keep = (torch.cumsum(values, 0) - values) < top_p      # keep while the mass before this one is below top_p
    keep[0] = True
    values, idx = values[keep], idx[keep]
    return int(idx[torch.multinomial(values, 1, generator=generator)])


@dataclass
class _Group:
    """Streams of one pass that share one attention call."""
    batch: int                    # streams
    n_q: int                      # queries per stream in the call (the longest new run)
    n_keys: int                   # keys per stream (the most blocks any of them uses × block size)
    table: torch.Tensor | None    # [batch × blocks] block ids, row-major per stream (None: ``span``)
    tokens: torch.Tensor | None   # their new tokens' indices in the pass (None: all of the pass, in order)
    rows: torch.Tensor | None     # [their new tokens] row in [batch × n_q] (None: one query each)
    mask: torch.Tensor | None     # [batch, 1, n_q, n_keys] True = attend (None: every key is attended)
    span: tuple[int, int] | None = None   # one stream whose blocks are first..first+n-1: K/V are a pool view


@dataclass
class _Plan:
    slots: torch.Tensor           # [new tokens] pool slot of each new token
    groups: list[_Group]          # one when all streams take one step (or all prefill); else steps, prefills
    ends: list[int]               # each stream's length after this pass

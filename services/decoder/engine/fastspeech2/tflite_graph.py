"""A read-only model of a TensorFlow Lite flatbuffer (first subgraph): tensors, constant buffers and operators.

Parsed with the ``tflite`` package (the flatbuffers schema bindings; no TensorFlow). Constants come back as float32
numpy arrays, int8/uint8 ones dequantized with their tensor's scale and zero point (per tensor, or per channel along
the quantized dimension).

The converter merges identical constant buffers (one zero bias serves every convolution of a width, one paddings
tensor every reflection pad of a size, one position table the encoder and the decoder) and names each shared tensor
after one of its users, so tensor names say little about what a tensor is. Callers find weights by following the
operator graph from the graph inputs: :meth:`TFLiteGraph.consumers`, :meth:`TFLiteGraph.producer`,
:meth:`TFLiteGraph.only`.
"""
from __future__ import annotations

import dataclasses
from functools import cached_property

import numpy as np

# TensorType values of the schema (tflite/TensorType.py) → numpy dtypes of the ones these graphs hold
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
           9: np.int8, 10: np.float64}
# operators that only read their input's shape: a tensor feeding one of these is not "used" by it
SHAPE_ONLY = frozenset({"SHAPE"})


@dataclasses.dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    buffer: int               # index into the model's buffers; tensors with equal contents may share one
    scale: np.ndarray | None  # quantization scales (one, or one per channel), None when not quantized
    zero_point: np.ndarray | None
    quantized_dimension: int


@dataclasses.dataclass(frozen=True)
class Op:
    index: int                # position in the subgraph's operator list (a topological order)
    name: str                 # builtin operator name (``CONV_2D``), or ``CUSTOM:<code>``
    inputs: tuple[int, ...]   # tensor indices; -1 for an omitted optional input
    outputs: tuple[int, ...]
    options: dict             # the builtin options as {field: value} (``Padding``, ``FusedActivationFunction``, …)


def _builtin_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator
    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _read_options(op) -> dict:
    """Every scalar (or vector, as a list) field of the operator's builtin options table, by its getter name."""
    import tflite
    from tflite.BuiltinOptions import BuiltinOptions
    kind = op.BuiltinOptionsType()
    if kind == 0:
        return {}
    class_name = {v: k for k, v in vars(BuiltinOptions).items() if not k.startswith("_")}[kind]
    table = op.BuiltinOptions()
    opts = getattr(tflite, class_name)()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for field in dir(opts):
        if not field[0].isupper() or field in ("Init",) or field.startswith("GetRootAs") or field.endswith(
                ("BufferHasIdentifier", "IsNone", "Length", "AsNumpy")):
            continue
        if hasattr(opts, field + "AsNumpy"):
            value = getattr(opts, field + "AsNumpy")()
            out[field] = [] if isinstance(value, int) else value.tolist()
            continue
        try:
            out[field] = getattr(opts, field)()
        except TypeError:        # a getter that needs an index (vector element): read through AsNumpy above
            continue
    return out


class TFLiteGraph:
    """The first subgraph of a ``.tflite`` file."""

    def __init__(self, path: str):
        import tflite
        self.path = path
        with open(path, "rb") as f:
            self._data = f.read()
        model = tflite.Model.GetRootAsModel(self._data, 0)
        self._model = model
        sub = model.Subgraphs(0)
        names = _builtin_names()
        self.tensors: list[Tensor] = []
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            q = t.Quantization()
            scale = zero = None
            qdim = 0
            if q is not None and q.ScaleLength():
                scale = q.ScaleAsNumpy().astype(np.float32)
                zero = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(len(scale), np.int64)
                qdim = q.QuantizedDimension()
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            self.tensors.append(Tensor(i, t.Name().decode(), shape, _DTYPES.get(t.Type(), None), t.Buffer(),
                                       scale, zero, qdim))
        self.ops: list[Op] = []
        for k in range(sub.OperatorsLength()):
            o = sub.Operators(k)
            code = model.OperatorCodes(o.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = names.get(builtin, str(builtin))
            if name == "CUSTOM":
                name = "CUSTOM:" + code.CustomCode().decode()
            self.ops.append(Op(k, name, tuple(int(i) for i in o.InputsAsNumpy()),
                               tuple(int(i) for i in o.OutputsAsNumpy()), _read_options(o)))
        self.inputs = tuple(int(i) for i in sub.InputsAsNumpy())
        self.outputs = tuple(int(i) for i in sub.OutputsAsNumpy())

    # -- structure ---------------------------------------------------------------------------------------------
    @cached_property
    def _producers(self) -> dict[int, Op]:
        return {t: op for op in self.ops for t in op.outputs}

    @cached_property
    def _consumers(self) -> dict[int, list[Op]]:
        out: dict[int, list[Op]] = {}
        for op in self.ops:
            for t in dict.fromkeys(op.inputs):
                if t >= 0:
                    out.setdefault(t, []).append(op)
        return out

    def input(self, name: str) -> int:
        """The graph input (signature argument) called ``name``."""
        for i in self.inputs:
            if self.tensors[i].name == name:
                return i
        raise KeyError(f"{self.path}: no graph input {name!r} (inputs: {[self.tensors[i].name for i in self.inputs]})")

    def producer(self, tensor: int) -> Op | None:
        return self._producers.get(tensor)

    def consumers(self, tensor: int, name: str | None = None) -> list[Op]:
        """The operators reading ``tensor`` (in graph order), those of type ``name`` only if given; operators that
        only read its shape are left out."""
        ops = [op for op in self._consumers.get(tensor, []) if op.name not in SHAPE_ONLY]
        return [op for op in ops if name is None or op.name == name]

    def only(self, tensor: int, name: str) -> Op:
        """The one operator of type ``name`` reading ``tensor``; an error if there are none or several."""
        ops = self.consumers(tensor, name)
        if len(ops) != 1:
            raise GraphError(f"{self.path}: tensor {tensor} ({self.tensors[tensor].name}) has {len(ops)} {name} "
                             f"consumers, expected 1")
        return ops[0]

    def other(self, op: Op, tensor: int) -> int:
        """The input of a two-input ``op`` that is not ``tensor``."""
        rest = [t for t in op.inputs if t != tensor]
        if len(rest) != 1:
            raise GraphError(f"{self.path}: op {op.index} {op.name} inputs {op.inputs} do not pair with {tensor}")
        return rest[0]

    # -- constants ---------------------------------------------------------------------------------------------
    def is_const(self, tensor: int) -> bool:
        return tensor >= 0 and self._raw(tensor) is not None

    def _raw(self, tensor: int) -> np.ndarray | None:
        t = self.tensors[tensor]
        buf = self._model.Buffers(t.buffer)
        if buf.Offset() > 1:                      # large models keep buffers after the flatbuffer
            raw = np.frombuffer(self._data, np.uint8, buf.Size(), buf.Offset())
        else:
            raw = buf.DataAsNumpy()
            if isinstance(raw, int):               # no data: an activation tensor
                return None
        return np.frombuffer(raw.tobytes(), t.dtype).reshape(t.shape)

    def raw(self, tensor: int) -> np.ndarray:
        """The stored contents of a constant tensor, in its own dtype (int8 stays int8)."""
        a = self._raw(tensor)
        if a is None:
            raise GraphError(f"{self.path}: tensor {tensor} ({self.tensors[tensor].name}) is not a constant")
        return a

    def const(self, tensor: int) -> np.ndarray:
        """A constant tensor as float32 (dequantized: (q - zero_point) * scale), or its integer value for int32/64."""
        t = self.tensors[tensor]
        a = self.raw(tensor)
        if t.scale is not None and a.dtype in (np.int8, np.uint8, np.int16, np.int32) and t.dtype != np.int32:
            shape = [1] * a.ndim
            if len(t.scale) > 1:
                shape[t.quantized_dimension] = len(t.scale)
            return ((a.astype(np.float32) - t.zero_point.reshape(shape).astype(np.float32))
                    * t.scale.reshape(shape)).astype(np.float32)
        if a.dtype in (np.int32, np.int64, np.bool_):
            return a.copy()
        return a.astype(np.float32)

    def const_or_dequantized(self, tensor: int) -> np.ndarray | None:
        """A constant, or the output of a DEQUANTIZE of a constant (how int8 weights reach float ops); else None."""
        if self.is_const(tensor):
            return self.const(tensor)
        op = self.producer(tensor)
        if op is not None and op.name == "DEQUANTIZE" and self.is_const(op.inputs[0]):
            return self.const(op.inputs[0])
        return None

    def shared_buffers(self) -> dict[int, list[int]]:
        """Buffers that back more than one constant tensor: {buffer: [tensor, …]}."""
        by_buffer: dict[int, list[int]] = {}
        for t in self.tensors:
            if self._raw(t.index) is not None and t.index not in self.inputs:
                by_buffer.setdefault(t.buffer, []).append(t.index)
        return {b: ts for b, ts in by_buffer.items() if len(ts) > 1}


class GraphError(ValueError):
    """The graph does not have the structure the reader follows."""

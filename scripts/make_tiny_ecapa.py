"""Write a small, randomly initialized ECAPA-TDNN speaker encoder in speechbrain's checkpoint layout
(hyperparams.yaml + embedding_model.ckpt), loadable with EncoderClassifier.from_hparams(source=<dir>).

Usage: python scripts/make_tiny_ecapa.py --out models/ecapa-tiny [--dim 96]
Operators use the same loader with a real checkpoint directory (TTS_SPEAKER_ECAPA_SOURCE=/models/spkrec-ecapa).
"""
from __future__ import annotations

import argparse
from pathlib import Path

HPARAMS = """# speechbrain ECAPA-TDNN speaker encoder (tiny, random weights: for tests)
sample_rate: 16000
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [{c}, {c}, {c}, {c}, {c3}]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    lin_neurons: {dim}
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
"""


def write_checkpoint(out: str | Path, dim: int = 96, channels: int = 64, seed: int = 0) -> Path:
    import torch
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ECAPA_TDNN(80, channels=[channels] * 4 + [channels * 3], kernel_sizes=[5, 3, 3, 3, 1],
                       dilations=[1, 2, 3, 4, 1], attention_channels=16, lin_neurons=dim)
    torch.save(model.state_dict(), out / "embedding_model.ckpt")
    (out / "hyperparams.yaml").write_text(HPARAMS.format(c=channels, c3=channels * 3, dim=dim))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/ecapa-tiny")
    ap.add_argument("--dim", type=int, default=96)
    a = ap.parse_args()
    print(write_checkpoint(a.out, a.dim))

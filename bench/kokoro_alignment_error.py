"""How far Kokoro's estimated character times (no durations model: the audio shared evenly between the input
tokens) are from the exact ones (the model's own duration predictor, exposed by ``make setup``), per character start,
on the customer-service replies of bench_stream. Prints mean / p50 / p95 / max |error| in ms.

    .venv/bin/python -m bench.kokoro_alignment_error
"""
from __future__ import annotations

import os

import numpy as np

from bench.bench_stream import REPLIES, pct
from services.decoder.engine.kokoro.engine import _stretches
from services.decoder.engine.kokoro.model import KokoroModel, prepare_durations
from services.decoder.engine.kokoro.phonemes import segment_phonemes_owned
from services.decoder.server import segment_from_proto
from services.frontend.engine import FrontendEngine
from services.frontend.server import segment_to_proto


def main() -> None:
    prepare_durations("models/kokoro")
    model = KokoroModel("models/kokoro", threads=1)
    model.load()
    fe = FrontendEngine(None)
    errors, chars = [], 0
    for text in REPLIES:
        for s in fe.analyze(text):
            seg = segment_from_proto(segment_to_proto(s))
            phonemes, owners = segment_phonemes_owned(seg)
            model.timed = True
            _, _, exact = model.synthesize_timed(phonemes, "jm_kumo", 1.0, 0.0)
            model.timed = False            # the same model output, times shared evenly between its tokens
            _, _, est = model.synthesize_timed(phonemes, "jm_kumo", 1.0, 0.0)
            a, b = _stretches(owners, exact), _stretches(owners, est)
            errors += [abs(x[2] - y[2]) / 24 for x, y in zip(a, b) if not x[4]]
            chars += len(a)
    print(f"kokoro estimated vs exact character starts, {len(errors)} voiced stretches of {len(REPLIES)} replies: "
          f"mean {np.mean(errors):.0f} ms, p50 {pct(errors, 50):.0f} ms, p95 {pct(errors, 95):.0f} ms, "
          f"max {max(errors):.0f} ms (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

"""Copy the subset of the Baker reference pack the tests use (run from the repository root):
    .venv/bin/python tests/data/baker-reference/vendor.py PACK_DIR
Every case keeps input_ids, speed, durations, f0, energy; MEL cases also mel_after; AUDIO cases also both audio
variants."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

MEL = {"case00_speed1", "case01_speed1", "case01_speed1.25", "case05_speed1", "case06_speed1"}
AUDIO = {"case00_speed1", "case01_speed1", "case05_speed1"}

pack, out = Path(sys.argv[1]), Path(__file__).resolve().parent
index = json.loads((pack / "index.json").read_text())
for entry in index:
    name = entry["file"][:-4]
    d = np.load(pack / entry["file"])
    keep = {k: d[k] for k in ("input_ids", "speed", "durations", "f0", "energy")}
    if name in MEL:
        keep["mel_after"] = d["mel_after"]
    if name in AUDIO:
        keep["audio_shipped"], keep["audio_float_subbands"] = d["audio_shipped"], d["audio_float_subbands"]
    np.savez_compressed(out / entry["file"], **keep)
    entry["keys"] = sorted(keep)
(out / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n")
shutil.copy(pack / "sources.sha256.json", out / "sources.sha256.json")

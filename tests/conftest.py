import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "gen"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def glmtts_checkpoint(tmp_path_factory):
    """A random ~10M-parameter GLM-TTS-format checkpoint (written once per test session)."""
    from services.decoder.engine.glmtts.checkpoint import write_tiny_checkpoint

    out = tmp_path_factory.mktemp("glmtts") / "ckpt"
    write_tiny_checkpoint(out, "10m", seed=0)
    return out

import pytest


@pytest.fixture(scope="session")
def glmtts_checkpoint(tmp_path_factory):
    """A random ~10M-parameter GLM-TTS-format checkpoint (written once per test session)."""
    from services.decoder.engine.glmtts.checkpoint import write_tiny_checkpoint

    out = tmp_path_factory.mktemp("glmtts") / "ckpt"
    write_tiny_checkpoint(out, "10m", seed=0)
    return out

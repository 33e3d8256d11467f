"""The whole system on loopback: a real redis-server and the four real services as subprocesses."""
from __future__ import annotations

import pytest

from tests.procs import make_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory, glmtts_checkpoint):
    glmtts = {} if glmtts_checkpoint is None else {
        # the engines of production (fastspeech2 the default); glmtts on a random tiny checkpoint with segments
        # bounded to 3 tokens per text id
        "TTS_DECODER_ENGINES": "fastspeech2,kokoro,glmtts", "TTS_DECODER_GLMTTS_PATH": str(glmtts_checkpoint),
        "TTS_DECODER_GLMTTS_MAX_TOKEN_RATIO": "3", "TTS_DECODER_GLMTTS_N_TIMESTEPS": "4"}
    s = make_stack(tmp_path_factory.mktemp("stack"), TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=5, **glmtts)
    yield s
    s.stop()


@pytest.fixture
def client(stack):
    with stack.client() as c:
        yield c

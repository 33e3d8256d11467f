"""The framework plugin suites: each runs in its framework's venv (.venv-pipecat, .venv-livekit: `make setup-plugins`)
against our real services on loopback, which run from the services' venv (TTS_SERVICE_PYTHON, default .venv).

The client package under test is the one installed in the framework venv (`pip install .[pipecat]`: its stubs are
built for protobuf 6 and 7), never the checkout's `tts`/`tts_client` (the checkout's stubs are the services' venv's):
the checkout is put at the end of sys.path only for tests.procs (make_stack)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]

import tts  # noqa: E402  (installed package, checked below)
import tts_client  # noqa: E402

for _mod in (tts, tts_client):
    assert Path(_mod.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), (
        f"{_mod.__name__} imported from {_mod.__file__}, not from this venv ({sys.prefix}): run the plugin suites "
        "with the venv's pytest (make test-plugins), not `python -m pytest` from the checkout")

os.environ.setdefault("TTS_SERVICE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
sys.path.append(str(ROOT))
from tests.procs import make_stack  # noqa: E402

from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc  # noqa: E402


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # the default engine (fastspeech2: exact alignment from its durations) alone
    s = make_stack(tmp_path_factory.mktemp("stack"), TTS_DECODER_ENGINES="fastspeech2")
    yield s
    s.stop()


@pytest.fixture
def decoder_streams(stack):
    """() → the streams the stack's decoder is synthesizing now (its Info)."""
    def count() -> int:
        with grpc.insecure_channel(stack.decoder.addr) as ch:
            info = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=5)
        return sum(e.active_streams for e in info.engines)
    return count

"""The framework plugin suites: each runs in its framework's venv (.venv-pipecat, .venv-livekit: `make setup-plugins`)
against our real services on loopback, which run from the services' venv (TTS_SERVICE_PYTHON, default .venv).

The client package under test is the one installed in the framework venv (`pip install .[pipecat]`: its stubs are
built for protobuf 6 and 7), never the checkout's `tts`/`tts_client` (the checkout's stubs are the services' venv's):
the checkout is put at the end of sys.path only for tests.procs (make_stack)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
IDLE_TIMEOUT_S = 10

import tts  # noqa: E402  (installed package, checked below)
import tts_client  # noqa: E402

for _mod in (tts, tts_client):
    assert Path(_mod.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), (
        f"{_mod.__name__} imported from {_mod.__file__}, not from this venv ({sys.prefix}): run the plugin suites "
        "with the venv's pytest (make test-plugins), not `python -m pytest` from the checkout")

os.environ.setdefault("TTS_SERVICE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
sys.path.append(str(ROOT))
from tests.procs import free_port, make_stack, wait_until  # noqa: E402

from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc  # noqa: E402


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # the default engine (fastspeech2: exact alignment from its durations) alone; the gateway's /metrics on; a stream
    # with no message for IDLE_TIMEOUT_S is ended by the gateway (60 s by default)
    s = make_stack(tmp_path_factory.mktemp("stack"), TTS_DECODER_ENGINES="fastspeech2",
                   TTS_GATEWAY_METRICS_PORT=(metrics_port := free_port()),
                   TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=IDLE_TIMEOUT_S)
    s.gateway_metrics_port = metrics_port
    yield s
    s.stop()


@pytest.fixture
def stream_outcomes(stack):
    """() → the gateway's StreamingSynthesize calls so far by outcome (ok, cancelled, error), from its /metrics, once
    no call is in progress (a call's outcome is counted as it leaves, which may be after its client saw the end)."""
    def scrape() -> str:
        url = f"http://127.0.0.1:{stack.gateway_metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def settled() -> str | None:
        text = scrape()
        busy = re.search(r'^tts_gateway_syntheses_in_progress\{rpc="StreamingSynthesize"\} (\S+)$', text, re.M)
        return text if not busy or float(busy.group(1)) == 0 else None

    def read() -> dict[str, float]:
        text = wait_until(settled, 10, "the gateway's calls to end")
        out: dict[str, float] = {}
        for m in re.finditer(r"^tts_gateway_syntheses_total\{(.*?)\} (\S+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("rpc") == "StreamingSynthesize":
                out[labels["outcome"]] = float(m.group(2))
        return out
    return read


@pytest.fixture
def decoder_streams(stack):
    """() → the streams the stack's decoder is synthesizing now (its Info)."""
    def count() -> int:
        with grpc.insecure_channel(stack.decoder.addr) as ch:
            info = decoder_pb2_grpc.DecoderStub(ch).Info(decoder_pb2.InfoRequest(), timeout=5)
        return sum(e.active_streams for e in info.engines)
    return count


def run_example(stack, tmp_path, name: str) -> subprocess.CompletedProcess:
    """examples/<name> (the README's), as a user runs it with this venv's Python, against the stack's gateway."""
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), "--out", str(tmp_path / "reply.wav")],
                          cwd=tmp_path, env={**os.environ, "TTS_GATEWAY": stack.gateway.addr},
                          capture_output=True, text=True, timeout=120)

"""The client installs like a package: a non-editable `pip install .` of a clean copy of the sources (no generated
stubs in it) into a fresh venv (no system site-packages), then the installed `ttsctl` — run outside the checkout, so
nothing is imported from it — answers --help and synthesizes against the real stack."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]


def _clean_copy(dest: Path) -> Path:
    """The files git tracks (plus new, not ignored ones): what a clone has, without tts/, build/, .venv, models."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in filter(None, names):
            if (ROOT / name).is_file():
                tar.add(ROOT / name, arcname=name)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        tar.extractall(dest, filter="data")
    assert not (dest / "tts").exists()
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    src = _clean_copy(tmp / "src")
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    # the package declares ranges (pyproject.toml); the versions the services pin (requirements-client.txt) as constraints
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
                          "-c", str(src / "requirements-client.txt"), str(src)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return venv, tmp


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pip_install_gives_a_working_ttsctl(installed, stack):
    venv, tmp = installed
    res = _run(venv, tmp, "ttsctl", "--help")
    assert res.returncode == 0 and "synth" in res.stdout, res.stderr
    # the stubs and the client come from the venv's site-packages, not from a checkout
    res = _run(venv, tmp, "python", "-c", "import json, tts.v1.tts_pb2 as t, tts_client as c; "
                                          "print(json.dumps([t.__file__, c.__file__]))")
    assert res.returncode == 0, res.stderr
    for path in json.loads(res.stdout):
        assert path.startswith(str(venv)), path
    out = tmp / "hello.wav"
    res = _run(venv, tmp, "ttsctl", "--target", stack.gateway.addr, "synth", "您好，请问有什么可以帮您？",
               "--out", str(out), timeout=300)
    assert res.returncode == 0, res.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000 and w.getnframes() > 24000
    opus = tmp / "hello.opus"
    res = _run(venv, tmp, "ttsctl", "--target", stack.gateway.addr, "synth", "您好。", "--stream",
               "--encoding", "ogg_opus", "--out", str(opus), timeout=300)
    assert res.returncode == 0, res.stderr
    audio, rate = sf.read(opus, dtype="float32")
    assert rate == 24000 and len(audio) > 4800

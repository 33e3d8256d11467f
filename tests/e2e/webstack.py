"""The web process on top of a real stack, for the HTTP API and browser tests.

Reuses the session ``stack``'s redis, speaker and decoder; adds its own frontend (with a copy of the replace
dictionary, so the dictionary editor can write it), its own gateway (auth on: tenants ``admin`` (admin) and
``alice``; 2 concurrent streams per tenant, so a 429 can be provoked without timing) and ``python -m services.web``.
The web process has the admin token configured (TTS_WEB_TOKEN): requests without an Authorization header use it.
"""
from __future__ import annotations

import json
import secrets
import shutil
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.auth import hash_token
from tests.procs import ROOT, Proc, free_port, make_stack, wait_until

TOKENS = {t: f"tok-{t}-{secrets.token_hex(8)}" for t in ("admin", "alice")}


class WebProc(Proc):
    def __init__(self, gateway_addr: str, tmp, token: str = "", port: int | None = None):
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.results_dir = tmp / f"results-{self.port}"
        super().__init__("web", [sys.executable, "-m", "services.web"], log_dir=tmp, env={
            "TTS_WEB_PORT": str(self.port), "TTS_WEB_GATEWAY_ADDR": gateway_addr, "TTS_WEB_TOKEN": token,
            "TTS_WEB_RESULTS_DIR": str(self.results_dir), "TTS_WEB_GRACE_SECONDS": "2",
            "TTS_WEB_METRICS_PORT": str(self.metrics_port)})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict]:
        """The process's JSON log lines so far (the whole file, not the tail ``log()`` keeps)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"level": "?", "msg": line})      # not ours (a traceback printed raw would land here)
        return out

    def metric(self, name: str, **labels) -> float:
        """A sample of the process's Prometheus /metrics (0 when it has not been counted yet)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def _answers(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"web exited:\n{self.log()}")
        try:
            urllib.request.urlopen(self.url + "/static/style.css", timeout=1).close()
            return True
        except OSError:
            return False

    def start(self) -> "WebProc":
        super().start()
        wait_until(self._answers, 30, "web answering", interval=0.1)
        return self


class WebStack:
    def __init__(self, stack, tmp):
        self.stack = stack
        self.tmp = tmp
        self.dict_path = tmp / "replace_dict.jsonl"
        shutil.copy(ROOT / "configs" / "G2P_replace_dict.jsonl", self.dict_path)
        self.own = make_stack(
            tmp, base=stack, start=("frontend", "gateway"), TTS_FRONTEND_REPLACE_DICT_PATH=self.dict_path,
            TTS_GATEWAY_TOKENS=",".join(f"{t}:{hash_token(tok)}" for t, tok in TOKENS.items()),
            TTS_GATEWAY_ADMIN_TENANTS="admin", TTS_GATEWAY_MAX_STREAMS_PER_TENANT=2,
            TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S=20, TTS_GATEWAY_BATCH_OUTPUT_DIR=tmp / "batch")
        self.frontend, self.gateway = self.own.frontend, self.own.gateway
        self.web = WebProc(self.gateway.addr, tmp, token=TOKENS["admin"]).start()

    @property
    def url(self) -> str:
        return self.web.url

    def stop(self):
        self.web.stop()
        self.own.stop()


@pytest.fixture(scope="session")
def webstack(stack, tmp_path_factory):
    s = WebStack(stack, tmp_path_factory.mktemp("web"))
    yield s
    s.stop()

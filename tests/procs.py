"""Helpers to run real services and redis-server as subprocesses on free loopback ports (used by fixtures)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns truthy or ``timeout`` passes (bounded polling, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Proc:
    def __init__(self, name: str, args: list[str], env: dict | None = None, log_dir: Path | None = None):
        self.name = name
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.log_path = (log_dir or Path("/tmp")) / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class RedisServer(Proc):
    """``policy="noeviction"`` for the durable-store role, the default ``allkeys-lfu`` for the cache role."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None, policy: str = "allkeys-lfu",
                 maxmemory: str = "64mb"):
        self.port = port or free_port()
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        super().__init__("redis", [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--maxmemory", maxmemory, "--maxmemory-policy", policy],
                         log_dir=log_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> "RedisServer":
        super().start()
        wait_until(self.ping, 10, f"redis-server on port {self.port}")
        return self


class Service(Proc):
    """``python -m services.<stage>`` with TTS_<STAGE>_PORT set; ``start()`` waits for health SERVING."""

    def __init__(self, stage: str, env: dict | None = None, port: int | None = None, log_dir: Path | None = None):
        self.stage = stage
        self.port = port or free_port()
        env = {f"TTS_{stage.upper()}_PORT": str(self.port), f"TTS_{stage.upper()}_GRACE_SECONDS": "5", **(env or {})}
        super().__init__(stage, [sys.executable, "-m", f"services.{stage}"], env=env, log_dir=log_dir)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def health(self) -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.addr) as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError:
                return "DOWN"

    def start(self, timeout: float = 120) -> "Service":
        super().start()

        def ready():
            if not self.alive():
                raise RuntimeError(f"{self.stage} exited:\n{self.log()}")
            return self.health() == "SERVING"

        wait_until(ready, timeout, f"{self.stage} SERVING", interval=0.1)
        return self

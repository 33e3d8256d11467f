"""Helpers to run real services and redis-server as subprocesses on free loopback ports (used by fixtures), and
``make_stack``: the one way tests and benchmarks start the whole system, or part of it over another stack."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import grpc

ROOT = Path(__file__).resolve().parent.parent
# the Python the services run with: this one, unless TTS_SERVICE_PYTHON names another (a framework plugin's tests run
# in that framework's venv, which has none of the services' dependencies: `make test-plugins` points this at .venv's)
SERVICE_PYTHON = os.environ.get("TTS_SERVICE_PYTHON") or sys.executable


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


def rpc_error(fn, *args, **kw) -> grpc.RpcError:
    """The ``grpc.RpcError`` that ``fn(*args, **kw)`` raises, reading a streamed answer to its end (the test fails if
    there is none)."""
    import pytest

    with pytest.raises(grpc.RpcError) as err:
        result = fn(*args, **kw)
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    return err.value


def served(client, text: str = "你好。", timeout: float = 120) -> bool:
    """The client's tenant is served: a StreamingSynthesize (16 kHz) through its gateway ends with a summary carrying
    audio (a refusal raises)."""
    from tts.v1 import tts_pb2
    from tts_client.client import make_config

    responses = list(client.stub.StreamingSynthesize(
        iter([tts_pb2.StreamingSynthesizeRequest(config=make_config(sample_rate=16000)),
              tts_pb2.StreamingSynthesizeRequest(text=text)]),
        metadata=client.metadata, timeout=timeout))
    return responses[-1].WhichOneof("response") == "summary" and responses[-1].summary.audio_ms > 0


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
    """``policy="noeviction"`` for the durable-store role, the default ``allkeys-lfu`` for the cache role.

    ``data_dir``: persisted there (append-only file, fsync'd at every write), so that a server killed and started
    again on the same port and folder (``again()``) has every write it acknowledged; without it, nothing is kept."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None, policy: str = "allkeys-lfu",
                 maxmemory: str = "64mb", data_dir: Path | None = None):
        self.port = port or free_port()
        self.policy, self.maxmemory, self.data_dir, self.log_dir = policy, maxmemory, data_dir, log_dir
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        persist = (["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always"] if data_dir else
                   ["--appendonly", "no"])
        super().__init__("redis", [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persist,
                                   "--maxmemory", maxmemory, "--maxmemory-policy", policy],
                         log_dir=log_dir)

    def again(self) -> "RedisServer":
        """A new server on this one's port, policy and data folder (after this one was killed)."""
        return RedisServer(port=self.port, log_dir=self.log_dir, policy=self.policy, maxmemory=self.maxmemory,
                           data_dir=self.data_dir).start()

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
        self.stage_env, self.log_dir = dict(env or {}), log_dir
        env = {f"TTS_{stage.upper()}_PORT": str(self.port), f"TTS_{stage.upper()}_GRACE_SECONDS": "5", **(env or {})}
        if stage == "decoder":
            # test stacks share busy CI cores, where the measured real-time capacity can be below one stream: admit a
            # few streams whatever it is (the tests about admission, and bench-stream, set their own)
            env.setdefault("TTS_DECODER_KOKORO_MIN_STREAMS", "16")
        super().__init__(stage, [SERVICE_PYTHON, "-m", f"services.{stage}"], env=env, log_dir=log_dir)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def again(self, timeout: float = 120) -> "Service":
        """A new process of this stage with the same env, port and log folder (after this one was killed)."""
        return Service(self.stage, env=self.stage_env, port=self.port, log_dir=self.log_dir).start(timeout)

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


def start_all(services, timeout: float = 180) -> None:
    """Start several services at once, then wait for each to be SERVING."""
    for svc in services:
        Proc.start(svc)
    for svc in services:
        def ready(svc=svc):
            if not svc.alive():
                raise RuntimeError(f"{svc.stage} exited:\n{svc.log()}")
            return svc.health() == "SERVING"
        wait_until(ready, timeout, f"{svc.stage} SERVING", interval=0.1)


# ---- the whole system ---------------------------------------------------------------------------------------------
ROLES = ("redis", "frontend", "speaker", "decoder", "gateway")
_PREFIXES = {f"TTS_{stage.upper()}_": stage for stage in ("frontend", "speaker", "decoder", "gateway")}


class Stack:
    """Redis, the three stages and a gateway on loopback, as ``make_stack`` started them (or borrowed them from
    another stack). ``stop()`` stops only what this stack started, as its attributes name them then (a test may
    replace a process it restarted)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.redis: RedisServer | None = None
        self.frontend: Service | None = None
        self.speaker: Service | None = None
        self.decoders: list[Service] = []
        self.gateway: Service | None = None
        self.gateway_env: dict[str, str] = {}
        self.started: tuple[str, ...] = ()

    @property
    def decoder(self) -> Service | None:
        return self.decoders[0] if self.decoders else None

    @decoder.setter
    def decoder(self, svc: Service) -> None:
        self.decoders[0] = svc

    def start_gateway(self) -> Service:
        """A new gateway process with the same env on the same port (after the old one was stopped or killed)."""
        self.gateway = Service("gateway", env=self.gateway_env, port=self.gateway.port, log_dir=self.tmp).start()
        return self.gateway

    def client(self, **kw):
        from tts_client import TTSClient

        return TTSClient(self.gateway.addr, **kw)

    def pids(self) -> dict[str, int]:
        return {role: getattr(self, role).proc.pid for role in ROLES if getattr(self, role) is not None}

    def stop(self) -> None:
        for role in reversed(ROLES):
            if role in self.started:
                for proc in (self.decoders if role == "decoder" else [getattr(self, role)]):
                    if proc is not None:
                        proc.stop()


def make_stack(tmp: Path, base: Stack | None = None, start: tuple[str, ...] = ROLES, decoders: int = 1,
               decoder_addrs: Callable[[list[str]], list[str]] | None = None, timeout: float = 180, **env) -> Stack:
    """Start the roles named in ``start`` (of ``ROLES``); the others are ``base``'s, or, without a base, absent
    (a gateway then points at a port nobody listens on).

    ``env``: env var names and values (``TTS_GATEWAY_RATE_PER_TENANT=0``); a ``TTS_<STAGE>_`` name goes to that
    stage, any other (``TTS_INTERNAL_TOKEN``) to every service started here. The gateway is pointed at the stack's
    stages and redis unless ``env`` names its own addresses; ``decoder_addrs(addrs)`` rewrites the decoder list it
    gets (a down decoder among them). The stages start at once, then the gateway (each SERVING within ``timeout``).
    """
    unknown = set(start) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; use {ROLES}")
    per_stage: dict[str, dict[str, str]] = {stage: {} for stage in _PREFIXES.values()}
    common: dict[str, str] = {}
    for name, value in env.items():
        stage = next((s for p, s in _PREFIXES.items() if name.startswith(p)), None)
        if stage is not None and stage not in start:
            raise ValueError(f"{name}: the {stage} is not started by this stack")
        (per_stage[stage] if stage else common)[name] = str(value)
    s = Stack(tmp)
    s.started = tuple(start)
    for role in ROLES:
        if role not in start and base is not None:
            setattr(s, "decoders" if role == "decoder" else role,
                    list(base.decoders) if role == "decoder" else getattr(base, role))
    if "redis" in start:
        s.redis = RedisServer(log_dir=tmp).start()

    def service(stage: str, **defaults) -> Service:
        return Service(stage, env={**common, **defaults, **per_stage[stage]}, log_dir=tmp)

    stages = []
    if "frontend" in start:
        s.frontend = service("frontend")
        stages.append(s.frontend)
    if "speaker" in start:
        s.speaker = service("speaker", **({"TTS_SPEAKER_REDIS_URL": s.redis.url} if s.redis else {}))
        stages.append(s.speaker)
    if "decoder" in start:
        s.decoders = [service("decoder") for _ in range(decoders)]
        stages += s.decoders
    start_all(stages, timeout)
    if "gateway" in start:
        addrs = [d.addr for d in s.decoders]
        s.gateway_env = {**common, **{k: v for k, v in {
            "TTS_GATEWAY_FRONTEND_ADDR": s.frontend.addr if s.frontend else f"127.0.0.1:{free_port()}",
            "TTS_GATEWAY_SPEAKER_ADDR": s.speaker.addr if s.speaker else f"127.0.0.1:{free_port()}",
            "TTS_GATEWAY_DECODER_ADDRS": ",".join(decoder_addrs(addrs) if decoder_addrs else addrs),
            "TTS_GATEWAY_REDIS_URL": s.redis.url if s.redis else None}.items() if v is not None},
            **per_stage["gateway"]}
        s.gateway = Service("gateway", env=s.gateway_env, log_dir=tmp).start(timeout)
    return s

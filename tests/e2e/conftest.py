"""The whole system on loopback: a real redis-server and the four real services as subprocesses."""
from __future__ import annotations

import pytest

from tests.procs import RedisServer, Service
from tts_client import TTSClient


class Stack:
    def __init__(self, tmp, glmtts_checkpoint=None):
        self.tmp = tmp
        self.redis = RedisServer(log_dir=tmp).start()
        self.frontend = Service("frontend", log_dir=tmp)
        self.speaker = Service("speaker", env={"TTS_SPEAKER_REDIS_URL": self.redis.url}, log_dir=tmp)
        glmtts = {} if glmtts_checkpoint is None else {
            # both engines, as in production; a random tiny checkpoint with segments bounded to 3 tokens per text id
            "TTS_DECODER_ENGINES": "embedded,glmtts", "TTS_DECODER_GLMTTS_PATH": str(glmtts_checkpoint),
            "TTS_DECODER_GLMTTS_MAX_TOKEN_RATIO": "3", "TTS_DECODER_GLMTTS_N_TIMESTEPS": "4"}
        self.decoder = Service("decoder", log_dir=tmp, env=glmtts)
        for svc in (self.frontend, self.speaker, self.decoder):
            svc.start()
        self.gateway = Service("gateway", log_dir=tmp, env={
            "TTS_GATEWAY_FRONTEND_ADDR": self.frontend.addr,
            "TTS_GATEWAY_SPEAKER_ADDR": self.speaker.addr,
            "TTS_GATEWAY_DECODER_ADDRS": self.decoder.addr,
            "TTS_GATEWAY_REDIS_URL": self.redis.url,
            "TTS_GATEWAY_STREAM_IDLE_TIMEOUT_S": "5",
        }).start()

    def client(self, **kw) -> TTSClient:
        return TTSClient(self.gateway.addr, **kw)

    def stop(self):
        for proc in (self.gateway, self.decoder, self.speaker, self.frontend, self.redis):
            proc.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, glmtts_checkpoint):
    s = Stack(tmp_path_factory.mktemp("stack"), glmtts_checkpoint)
    yield s
    s.stop()


@pytest.fixture
def client(stack):
    with stack.client() as c:
        yield c

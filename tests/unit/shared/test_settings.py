"""One settings object per service: nested sections read the same flat env names, secrets are logged masked."""
import json
import logging

import pytest

from services.frontend.settings import FrontendSettings
from services.gateway.auth import Authenticator
from services.gateway.settings import GatewaySettings
from services.speaker.settings import SpeakerSettings
from services.web.settings import WebSettings
from shared import limits
from shared.logging import JsonFormatter
from shared.settings import env_names

SECRET = "do-not-log-me-7f3a"


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter("test"))

    def emit(self, record):
        self.lines.append(self.format(record))


def _logged(settings) -> str:
    logger = logging.getLogger(f"test.settings.{id(settings)}")
    logger.propagate = False
    cap = _Capture()
    logger.addHandler(cap)
    logger.setLevel(logging.INFO)
    settings.log_once(logger)
    (line,) = cap.lines
    return line


def test_log_once_masks_the_secrets_and_logs_every_section(monkeypatch):
    monkeypatch.setenv("TTS_INTERNAL_TOKEN", SECRET)
    monkeypatch.setenv("TTS_GATEWAY_TOKENS", f"acme:{'a' * 60}{SECRET[:4]}")
    monkeypatch.setenv("TTS_WEB_TOKEN", SECRET)
    monkeypatch.setenv("TTS_GATEWAY_BATCH_CONCURRENCY", "5")
    monkeypatch.setenv("TTS_GATEWAY_RATE_PER_TENANT", "3.5")
    gateway = GatewaySettings()
    assert gateway.internal_token.get_secret_value() == SECRET      # read, only never shown
    line = _logged(gateway)
    assert SECRET not in line and "a" * 60 not in line
    logged = json.loads(line)["settings"]
    assert logged["internal_token"] == logged["auth"]["tokens"] == "**********"
    assert logged["batch"]["concurrency"] == 5 and logged["limits"]["rate_per_tenant"] == 3.5
    assert {"auth", "limits", "quotas", "batch"} <= set(logged)
    web = _logged(WebSettings())
    assert SECRET not in web and json.loads(web)["settings"]["token"] == "**********"


def test_sections_keep_the_flat_env_names(monkeypatch):
    env = {"TTS_GATEWAY_BATCH_INPUT_DIR": "/in", "TTS_GATEWAY_BATCH_MAX_JOBS_PER_TENANT": "3",
           "TTS_GATEWAY_MAX_JOBS_PER_TENANT": "40", "TTS_GATEWAY_MAX_STREAMS_PER_TENANT": "7",
           "TTS_GATEWAY_ADMIN_TENANTS": "ops, root", "TTS_GATEWAY_TOKENS_FILE": "/t"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = GatewaySettings()
    assert (s.batch.input_dir, s.batch.max_jobs_per_tenant, s.quotas.max_jobs_per_tenant) == ("/in", 3, 40)
    assert s.limits.max_streams_per_tenant == 7 and s.auth.tokens_file == "/t"
    assert s.auth.admins() == {"ops", "root"}
    assert set(env) <= env_names(GatewaySettings)
    assert "TTS_INTERNAL_TOKEN" in env_names(GatewaySettings)
    assert "TTS_GATEWAY_INTERNAL_TOKEN" not in env_names(GatewaySettings)


def test_internal_token_is_read_only_from_its_one_name(monkeypatch):
    monkeypatch.delenv("TTS_INTERNAL_TOKEN", raising=False)
    monkeypatch.setenv("TTS_GATEWAY_INTERNAL_TOKEN", SECRET)
    assert GatewaySettings().internal_token.get_secret_value() == ""


def test_admins_only_matter_with_auth_on():
    assert Authenticator("").is_admin("anyone")
    auth = Authenticator("", tokens="ops:" + "0" * 64 + ",acme:" + "1" * 64, admins={"ops"})
    assert auth.is_admin("ops") and not auth.is_admin("acme")


@pytest.mark.parametrize("settings_cls, field, value", [
    (GatewaySettings, "max_text_chars", limits.MAX_TEXT_CHARS),
    (FrontendSettings, "max_text_chars", limits.MAX_TEXT_CHARS),
    (GatewaySettings, "max_reference_bytes", limits.MAX_REFERENCE_BYTES),
    (SpeakerSettings, "max_audio_bytes", limits.MAX_REFERENCE_BYTES),
    (GatewaySettings, "stream_idle_timeout_s", limits.STREAM_IDLE_TIMEOUT_S),
])
def test_shared_limits_are_the_services_defaults(settings_cls, field, value):
    assert settings_cls.model_fields[field].default == value

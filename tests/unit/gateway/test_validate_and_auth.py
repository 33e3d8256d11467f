import pytest

from services.gateway.auth import Authenticator, hash_token
from services.gateway.validate import check_model, check_text, has_speakable, validate_config
from shared.errors import InvalidArgument, Unauthenticated
from tts.v1 import tts_pb2


def cfg(**kw):
    return tts_pb2.SynthesisConfig(**kw)


@pytest.mark.parametrize("config, field", [
    (cfg(sample_rate=12345), "config.sample_rate"),
    (cfg(encoding=tts_pb2.MULAW), "config.sample_rate"),
    (cfg(encoding=99), "config.encoding"),
    (cfg(encoding=tts_pb2.OGG_OPUS, sample_rate=22050), "config.sample_rate"),    # not an Opus rate
    (cfg(chunk_size=-1), "config.chunk_size"),
    (cfg(speed=0.1), "config.speed"),
    (cfg(seed=2**64 - 1), "config.seed"),
    (cfg(language="fr"), "config.language"),
    (cfg(reference_audio=b"x" * 11), "config.reference_audio"),
])
def test_invalid_config_names_the_field(config, field):
    with pytest.raises(InvalidArgument) as exc:
        validate_config(config, 24000, max_reference_bytes=10)
    assert exc.value.field == field


def test_unknown_model_names_the_field_and_the_known_ones():
    with pytest.raises(InvalidArgument) as exc:
        check_model("gpt", ["kokoro", "glmtts"])
    assert exc.value.field == "config.model"
    assert "'gpt'" in str(exc.value) and "kokoro, glmtts" in str(exc.value)
    check_model("", ["kokoro"])             # "" = the default
    check_model("glmtts", ["kokoro", "glmtts"])


@pytest.mark.parametrize("config", [
    cfg(), cfg(sample_rate=16000), cfg(sample_rate=8000, encoding=tts_pb2.MULAW), cfg(encoding=tts_pb2.WAV),
    cfg(encoding=tts_pb2.OGG_OPUS), cfg(encoding=tts_pb2.OGG_OPUS, sample_rate=48000), cfg(encoding=tts_pb2.MP3, sample_rate=22050),
    cfg(encoding=tts_pb2.FLAC, sample_rate=44100), cfg(encoding=tts_pb2.AAC),
    cfg(speed=1.5, chunk_size=25, seed=1, model="glmtts", language="zh"), cfg(voice="jm_kumo"),
])
def test_valid_configs_pass(config):
    validate_config(config, 24000, max_reference_bytes=10)


def test_text_limits_and_controls():
    check_text("你好\n世界\t!", 7, 100)
    with pytest.raises(InvalidArgument, match="limit is 5"):
        check_text("abcdef", 6, 5)
    with pytest.raises(InvalidArgument, match="U\\+001B at position 2"):
        check_text("ab\x1bc", 4, 100)


def test_speakable():
    assert has_speakable("你好") and has_speakable("42") and has_speakable("ok")
    assert not has_speakable("。，！？ …") and not has_speakable("🙂")


def test_auth_maps_tokens_to_tenants(tmp_path):
    f = tmp_path / "tokens"
    f.write_text(f"# tenant sha256(token)\nacme {hash_token('s3cret')}\nglobex {hash_token('other')}\n")
    auth = Authenticator(str(f))
    assert auth.tenant({"authorization": "Bearer s3cret"}) == "acme"
    assert auth.tenant({"authorization": "bearer other"}) == "globex"
    for md in ({}, {"authorization": "Bearer nope"}, {"authorization": "Basic s3cret"}):
        with pytest.raises(Unauthenticated):
            auth.tenant(md)


def test_auth_off_means_one_default_tenant():
    assert Authenticator("").tenant({}) == "default"


def test_a_gateway_without_decoder_addresses_does_not_start(monkeypatch):
    from pydantic import ValidationError

    from services.gateway.settings import GatewaySettings

    monkeypatch.setenv("TTS_GATEWAY_DECODER_ADDRS", " , ")
    with pytest.raises(ValidationError, match="TTS_GATEWAY_DECODER_ADDRS is empty"):
        GatewaySettings()

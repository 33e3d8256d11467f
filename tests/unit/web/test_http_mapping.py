"""The web process's pure parts: gRPC status → HTTP status and JSON body, the caller's field names, result files."""
from __future__ import annotations

import json
import struct

import grpc
import pytest

from services.web.results import ResultStore
from services.web.errors import HTTPError, error_response
from services.web.inputs import get_field
from services.web.openai_api import OPENAI_PARAMS
from shared.errors import InvalidArgument
from shared.interceptors import status_trailers
from tts_client.errors import TTSError, from_rpc_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details, trailers=()):
        self._code, self._details, self._trailers = code, details, trailers

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


def body(resp):
    return json.loads(resp.body)["error"]


@pytest.mark.parametrize("code,status", [("INVALID_ARGUMENT", 400), ("UNAUTHENTICATED", 401),
                                         ("PERMISSION_DENIED", 403), ("NOT_FOUND", 404),
                                         ("RESOURCE_EXHAUSTED", 429), ("UNAVAILABLE", 503),
                                         ("DEADLINE_EXCEEDED", 504), ("INTERNAL", 500), ("UNKNOWN", 500)])
def test_status_codes(code, status):
    resp = error_response(TTSError(code, "boom"))
    assert resp.status == status and body(resp)["code"] == code


def invalid_argument(field: str, message: str) -> FakeRpcError:
    """A call failed as a service of ours fails it: the message, and the field as a BadRequest in the details."""
    exc = InvalidArgument(field, message)
    return FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, exc.message, status_trailers(exc))


def test_invalid_argument_names_the_openai_field():
    err = from_rpc_error(invalid_argument("config.speed", "5 is outside 0.5..2.0"))
    assert err.field == "config.speed" and err.message == "config.speed: 5 is outside 0.5..2.0"
    resp = error_response(err, OPENAI_PARAMS)
    assert resp.status == 400
    assert body(resp)["param"] == "speed" and body(resp)["message"] == "speed: 5 is outside 0.5..2.0"
    assert body(error_response(err))["param"] == "config.speed"        # the page's API keeps the gateway's name


def test_the_field_comes_from_the_details_not_the_message():
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "config.speed: 5 is outside 0.5..2.0"))
    assert err.field == "" and error_response(err).status == 400


def test_retry_after_from_trailer_rounds_up():
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", (("retry-after-ms", "1200"),)))
    assert err.retry_after_s == 1.2
    resp = error_response(err)
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    assert body(resp)["type"] == "rate_limit_error"


def test_retry_after_from_retry_info_details():
    from google.protobuf import duration_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    st = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="x")
    st.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3)))
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x",
                                      (("grpc-status-details-bin", st.SerializeToString()),)))
    assert err.retry_after_s == 3


def test_401_asks_for_a_bearer_token():
    assert error_response(TTSError("UNAUTHENTICATED", "invalid token")).headers["WWW-Authenticate"] == "Bearer"


def test_get_field_types():
    assert get_field({"speed": 1}, "speed", float) == 1.0
    assert get_field({"seed": 3.0}, "seed", int) == 3
    assert get_field({}, "voice", str, "") == ""
    for bad in ({"speed": "fast"}, {"speed": True}):
        with pytest.raises(HTTPError) as exc:
            get_field(bad, "speed", float)
        assert exc.value.status == 400 and exc.value.param == "speed"
    with pytest.raises(HTTPError):
        get_field({}, "input", str, required=True)


def test_result_store_writes_a_complete_wav_and_prunes(tmp_path):
    store = ResultStore(str(tmp_path), max_results=2)
    alice, bob = "a" * 32, "b" * 32
    ids = []
    for n in range(3):
        w = store.writer(alice)
        w.write(b"\x01\x00" * 100, 16000)
        w.write(b"\x02\x00" * 50, 16000)
        ids.append(w.finish())
    assert store.path(ids[0], alice) is None and store.path(ids[2], alice) is not None     # the oldest went
    assert store.path(ids[2], bob) is None                     # bound to its owner: another caller gets nothing
    data = store.path(ids[2], alice).read_bytes()
    assert struct.unpack("<I", data[40:44])[0] == 300 == len(data) - 44
    assert store.path("../../etc/passwd", alice) is None
    w = store.writer(alice)
    w.write(b"\x00\x00", 16000)
    w.discard()
    assert not list(tmp_path.glob("*/.*.part"))


def test_every_voice_and_model_the_openai_sdk_names_is_known():
    """The pinned SDK's own lists (openai.types.audio): a voice or model OpenAI adds (marin and cedar were a 400)
    shows up here with the SDK upgrade."""
    import typing

    from openai.types.audio.speech_create_params import Voice
    from openai.types.audio.speech_model import SpeechModel

    from services.web.openai_api import OPENAI_MODELS, OPENAI_VOICES

    def literals(alias) -> set[str]:
        out = set()
        for arg in typing.get_args(alias):
            out |= literals(arg) if typing.get_origin(arg) in (typing.Literal, typing.Union) else (
                {arg} if isinstance(arg, str) else set())
        return out

    voices, models = literals(Voice), literals(SpeechModel)
    assert {"alloy", "marin", "cedar"} <= voices and "gpt-4o-mini-tts" in models      # the lists were read
    assert voices <= OPENAI_VOICES and models <= OPENAI_MODELS

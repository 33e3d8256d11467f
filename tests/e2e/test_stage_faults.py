"""A stage going down and coming back: UNAVAILABLE naming the stage, then served again without restarting the gateway."""
from __future__ import annotations

import grpc
import pytest

from tests.procs import wait_until
from tts_client.client import make_config


def served_again(client) -> bool:
    try:
        return client.stream(["又好了。"], make_config()).summary.audio_ms > 300
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()   # reconnecting; anything else is a bug
        return False


def test_frontend_down_then_back(stack, client):
    stack.frontend.kill()
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.stream(["你好。"], make_config())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details().startswith("frontend unavailable")
        assert stack.gateway.health() == "SERVING"
    finally:
        stack.frontend = stack.frontend.again()
    assert wait_until(lambda: served_again(client), 15, "the gateway to reach the restarted stage", interval=0.2)


def test_decoder_down_then_back(stack, client):
    stack.decoder.kill()
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.stream(["你好。"], make_config())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details().startswith("decoder unavailable")
    finally:
        stack.decoder = stack.decoder.again()
    assert wait_until(lambda: served_again(client), 15, "the gateway to reach the restarted stage", interval=0.2)

"""Per-tenant limits with a fake clock: no sleeps, time only moves when the test says so."""
import asyncio

import pytest

from services.gateway.auth import Authenticator, hash_token
from services.gateway.limits import TenantLimits
from services.gateway.settings import AuthSettings, GatewaySettings, LimitSettings
from shared.errors import ResourceExhausted
from tests.fakes import FakeClock


def limits(clock, streams=2, rate=2.0, burst=3.0):
    return TenantLimits(LimitSettings(max_streams_per_tenant=streams, rate_per_tenant=rate, burst_per_tenant=burst),
                        clock=clock)


def test_burst_then_refill_at_the_rate_with_retry_hint():
    clock = FakeClock(1000.0)
    lim = limits(clock, rate=2.0, burst=3.0)
    for _ in range(3):
        lim.check_rate("a")
    with pytest.raises(ResourceExhausted) as exc:
        lim.check_rate("a")
    assert exc.value.retry_after_s == pytest.approx(0.5)       # one token every 1/2 s
    clock.advance(0.25)
    with pytest.raises(ResourceExhausted) as exc:
        lim.check_rate("a")
    assert exc.value.retry_after_s == pytest.approx(0.25)
    clock.advance(0.25)
    lim.check_rate("a")                                        # exactly one token refilled
    with pytest.raises(ResourceExhausted):
        lim.check_rate("a")


def test_bucket_never_exceeds_burst_after_idle():
    clock = FakeClock(1000.0)
    lim = limits(clock, rate=10.0, burst=2.0)
    clock.advance(3600)
    lim.check_rate("a")
    lim.check_rate("a")
    with pytest.raises(ResourceExhausted):
        lim.check_rate("a")


def test_tenants_have_separate_buckets():
    clock = FakeClock(1000.0)
    lim = limits(clock, rate=1.0, burst=1.0)
    lim.check_rate("a")
    with pytest.raises(ResourceExhausted):
        lim.check_rate("a")
    lim.check_rate("b")


def test_clock_going_backwards_does_not_mint_tokens():
    clock = FakeClock(1000.0)
    lim = limits(clock, rate=1.0, burst=1.0)
    lim.check_rate("a")
    clock.advance(-100)
    with pytest.raises(ResourceExhausted):
        lim.check_rate("a")


def test_zero_turns_limits_off():
    lim = limits(FakeClock(1000.0), streams=0, rate=0, burst=0)
    for _ in range(1000):
        lim.check_rate("a")
        lim.acquire("a")
    assert lim.active("a") == 1000


def test_concurrent_streams_limit_and_release():
    lim = limits(FakeClock(1000.0), streams=2)
    with lim.stream("a"):
        with lim.stream("a"):
            assert lim.active("a") == 2
            with pytest.raises(ResourceExhausted) as exc:
                with lim.stream("a"):
                    pass
            assert exc.value.retry_after_s == pytest.approx(1.0)
            assert lim.active("a") == 2                         # a refused stream takes no slot
            with lim.stream("b"):                               # other tenants are not affected
                pass
        with lim.stream("a"):
            pass
    assert lim.active("a") == 0 and lim.active("b") == 0


def test_slot_released_when_the_body_fails():
    lim = limits(FakeClock(1000.0), streams=1)
    with pytest.raises(ValueError):
        with lim.stream("a"):
            raise ValueError("boom")
    assert lim.active("a") == 0


async def test_slot_released_when_an_async_generator_is_cancelled():
    lim = limits(FakeClock(1000.0), streams=1)
    entered = asyncio.Event()
    never = asyncio.Event()

    async def rpc():
        async with lim.stream("a"):
            entered.set()
            await never.wait()
            yield b"never"

    async def consume():
        async for _ in rpc():
            pass

    task = asyncio.ensure_future(consume())
    await entered.wait()
    assert lim.active("a") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lim.active("a") == 0


async def test_slot_released_when_a_generator_is_closed_early():
    lim = limits(FakeClock(1000.0), streams=1)

    async def rpc():
        async with lim.stream("a"):
            for i in range(10):
                yield i

    gen = rpc()
    assert await gen.__anext__() == 0
    assert lim.active("a") == 1
    await gen.aclose()
    assert lim.active("a") == 0


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("TTS_GATEWAY_MAX_STREAMS_PER_TENANT", "7")
    monkeypatch.setenv("TTS_GATEWAY_RATE_PER_TENANT", "1.5")
    monkeypatch.setenv("TTS_GATEWAY_BURST_PER_TENANT", "4")
    for s in (LimitSettings(), GatewaySettings().limits):       # the gateway's section reads the same names
        assert (s.max_streams_per_tenant, s.rate_per_tenant, s.burst_per_tenant) == (7, 1.5, 4)


# ---- tenant tokens from the env var (auth.py) ---------------------------------------------------------------------
def test_tokens_from_env_var_and_file_are_merged(tmp_path, monkeypatch):
    f = tmp_path / "tokens"
    f.write_text(f"acme {hash_token('s3cret')}\n")
    monkeypatch.setenv("TTS_GATEWAY_TOKENS", f"globex:{hash_token('g')}, initech:{hash_token('i').upper()}")
    auth = Authenticator.from_settings(AuthSettings(tokens_file=str(f)))
    assert auth.tenants == {"acme", "globex", "initech"}
    assert auth.tenant({"authorization": "Bearer g"}) == "globex"
    assert auth.tenant({"authorization": "Bearer i"}) == "initech"
    assert auth.tenant({"authorization": "Bearer s3cret"}) == "acme"


def test_tokens_env_alone_enables_auth(monkeypatch):
    monkeypatch.setenv("TTS_GATEWAY_TOKENS", f"acme:{hash_token('x')}")
    auth = Authenticator.from_settings(GatewaySettings().auth)
    assert auth.enabled
    from shared.errors import Unauthenticated
    with pytest.raises(Unauthenticated):
        auth.tenant({})
    with pytest.raises(Unauthenticated):
        auth.tenant({"authorization": "Bearer "})


@pytest.mark.parametrize("value", ["acme", "acme:abc", ":" + "0" * 64, "acme:" + "z" * 64])
def test_bad_tokens_env_is_refused_at_start(value):
    with pytest.raises(SystemExit):
        Authenticator("", tokens=value)


def test_same_hash_for_two_tenants_is_refused():
    h = hash_token("t")
    with pytest.raises(SystemExit):
        Authenticator("", tokens=f"a:{h},b:{h}")

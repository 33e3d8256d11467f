"""The throttle of failed authentications (services/gateway/auth.py) on an injected clock: its window, what it keeps,
whom it believes. The same behaviour against the real gateway: tests/e2e/test_adversarial.py."""
from __future__ import annotations

import pytest

import services.gateway.auth as auth_module
from services.gateway.auth import Authenticator, AuthThrottle, hash_token
from shared.errors import ResourceExhausted, Unauthenticated


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authenticator(clock, **kw) -> Authenticator:
    throttle = AuthThrottle(**{"per_client": 3, "per_prefix": 5, "window_s": 60.0, "prefix_chars": 4,
                               "clock": clock, **kw})
    return Authenticator("", tokens=f"alice:{hash_token('good-alice')},bob:{hash_token('good-bob')}",
                         throttle=throttle)


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def test_a_client_over_its_failures_waits_for_the_end_of_its_window():
    clock = Clock()
    auth = authenticator(clock)
    for i in range(3):
        with pytest.raises(Unauthenticated):
            auth.tenant(bearer(f"x{i}-wrong"), "ipv4:10.0.0.1:5000")
    clock.now += 20
    with pytest.raises(ResourceExhausted) as err:          # the valid token too: the client is throttled
        auth.tenant(bearer("good-alice"), "ipv4:10.0.0.1:5001")
    assert err.value.retry_after_s == pytest.approx(40.0)
    assert auth.tenant(bearer("good-bob"), "ipv4:10.0.0.2:5000") == "bob"      # another client is not
    clock.now += 39.9
    with pytest.raises(ResourceExhausted):                 # refused calls did not count: the window is the same
        auth.tenant(bearer("good-alice"), "ipv4:10.0.0.1:5000")
    clock.now += 0.2
    assert auth.tenant(bearer("good-alice"), "ipv4:10.0.0.1:5000") == "alice"


def test_missing_and_empty_tokens_count_as_failures():
    clock = Clock()
    auth = authenticator(clock)
    for md in ({}, {"authorization": "Basic abc"}, bearer("")):
        with pytest.raises(Unauthenticated):
            auth.tenant(md, "ipv4:10.0.0.3:1")
    with pytest.raises(ResourceExhausted):
        auth.tenant(bearer("good-alice"), "ipv4:10.0.0.3:1")


def test_a_prefix_is_throttled_across_addresses_but_never_a_prefix_a_tenant_uses():
    clock = Clock()
    auth = authenticator(clock)
    assert auth.tenant(bearer("good-alice"), "ipv4:10.0.1.1:1") == "alice"     # "good" becomes a known prefix
    for i in range(5):                                      # 5 addresses, one failure each: under per_client
        with pytest.raises(Unauthenticated):
            auth.tenant(bearer(f"evil{i}"), f"ipv4:10.0.2.{i}:1")
    with pytest.raises(ResourceExhausted) as err:
        auth.tenant(bearer("evil-9"), "ipv4:10.0.3.1:1")
    assert "PER_PREFIX" in err.value.message
    for i in range(10):                                     # guesses with alice's prefix are not counted as its
        with pytest.raises(Unauthenticated):
            auth.tenant(bearer(f"good{i}"), f"ipv4:10.0.4.{i}:1")
    assert auth.tenant(bearer("good-alice"), "ipv4:10.0.5.1:1") == "alice"


def test_a_throttled_client_costs_no_token_hash(monkeypatch):
    clock = Clock()
    auth = authenticator(clock)
    hashed = []
    monkeypatch.setattr(auth_module, "hash_token", lambda t: hashed.append(t) or hash_token(t))
    for i in range(3):
        with pytest.raises(Unauthenticated):
            auth.tenant(bearer(f"w{i}" * 2000), "ipv4:10.0.6.1:1")
    assert len(hashed) == 3
    for _ in range(100):
        with pytest.raises(ResourceExhausted):
            auth.tenant(bearer("w" * 4000), "ipv4:10.0.6.1:1")
    assert len(hashed) == 3                                 # refused before any hashing


def test_the_table_is_bounded_and_drops_the_oldest_windows():
    clock = Clock()
    auth = authenticator(clock, max_entries=10)
    for i in range(1000):
        clock.now += 0.001
        with pytest.raises(Unauthenticated):
            auth.tenant(bearer(f"{i:04d}zz"), f"ipv4:10.1.{i // 250}.{i % 250}:1")
    assert len(auth.throttle._windows) <= 10


def test_forwarded_for_is_believed_from_trusted_proxies_only_and_ipv6_counts_per_64():
    throttle = AuthThrottle(trusted_proxies="10.9.0.0/16, ::1")
    fwd = {"x-forwarded-for": "203.0.113.7"}
    assert throttle.client("ipv4:10.9.3.4:5000", fwd) == "203.0.113.7"
    assert throttle.client("ipv6:[::1]:5000", {"x-forwarded-for": "198.51.100.1, 203.0.113.9"}) == "203.0.113.9"
    assert throttle.client("ipv4:10.8.3.4:5000", fwd) == "10.8.3.4"       # not a proxy of ours: its own address
    assert throttle.client("ipv4:10.9.3.4:5000", {}) == "10.9.3.4"
    a = throttle.client("ipv6:[2001:db8:1:2:aaaa::1]:1", {})
    assert a == throttle.client("ipv6:[2001:db8:1:2:bbbb::2]:1", {}) == "2001:db8:1:2::/64"
    assert a != throttle.client("ipv6:[2001:db8:1:3::1]:1", {})
    with pytest.raises(SystemExit, match="TTS_GATEWAY_TRUSTED_PROXIES"):
        AuthThrottle(trusted_proxies="not-an-address")


def test_held_refusals_are_bounded_per_client_and_in_all():
    clock = Clock()
    auth = authenticator(clock, hold_s=1.0, held_per_client=2, held_max=3)
    for client in ("10.2.0.1", "10.2.0.2"):
        for i in range(3):
            with pytest.raises(Unauthenticated):
                auth.tenant(bearer(f"q{i}zz"), f"ipv4:{client}:1")

    def refuse(client: str) -> ResourceExhausted:
        with pytest.raises(ResourceExhausted) as err:
            auth.tenant(bearer("good-alice"), f"ipv4:{client}:1")
        return err.value

    first = [refuse("10.2.0.1") for _ in range(3)]
    assert [e.answer_after_s for e in first] == [1.0, 1.0, 0.0]        # 2 held for this client, then at once
    assert refuse("10.2.0.2").answer_after_s == 1.0                   # 3 held in all ...
    assert refuse("10.2.0.2").answer_after_s == 0.0                   # ... the limit
    first[0].on_answered()
    assert auth.throttle.held == 2 and refuse("10.2.0.2").answer_after_s == 1.0
    assert refuse("10.2.0.1").answer_after_s == 0.0                   # 3 held in all again
    first[1].on_answered()
    clock.now += 59.5
    assert refuse("10.2.0.1").answer_after_s == pytest.approx(0.5)    # never held past the retry delay

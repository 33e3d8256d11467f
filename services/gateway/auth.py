"""Bearer tokens → tenant. Tokens are stored hashed (sha256 hex), never in clear.

Two sources, merged (auth is on when either is set), both in ``GatewaySettings.auth``:
- ``TTS_GATEWAY_TOKENS_FILE``: one ``tenant sha256hex`` per line, ``#`` starts a comment;
- ``TTS_GATEWAY_TOKENS``: ``tenant:sha256hex,tenant2:sha256hex`` (handy for a k8s Secret as an env var).

Hash a token with ``printf %s "$TOKEN" | sha256sum`` (or ``services.gateway.auth.hash_token``).

Failed authentications are throttled (``AuthThrottle``): more than ``TTS_GATEWAY_AUTH_FAILURES_PER_CLIENT`` from one
client address (IPv6: one /64) within ``TTS_GATEWAY_AUTH_FAILURE_WINDOW_S``, or ``_PER_PREFIX`` with tokens that
share their first ``TTS_GATEWAY_AUTH_PREFIX_CHARS`` characters (a guesser spread over many addresses), and the client
(the prefix) is refused until that window ends: RESOURCE_EXHAUSTED with a RetryInfo — a real rate limit, so a
client backs off for the time given. The check runs before the token is hashed and costs one dict lookup; a
prefix a valid token of this gateway has used is never blocked (an attacker who knows a tenant's prefix cannot lock
it out), and a blocked address is refused whatever token it brings (only that address: other clients are not
affected). Behind a proxy (the web process) the client is the address the proxy names in ``x-forwarded-for``,
believed only from ``TTS_GATEWAY_TRUSTED_PROXIES``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from pathlib import Path
from typing import Callable

from shared.errors import ResourceExhausted, Unauthenticated

from .metrics import AUTH_FAILURES
from .settings import AuthSettings

DEFAULT_TENANT = "default"
TOKENS_ENV = "TTS_GATEWAY_TOKENS"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check(tenant: str, digest: str, where: str) -> tuple[str, str]:
    if not tenant or not _HEX64.match(digest):
        raise SystemExit(f"{where}: expected 'tenant sha256hex' (64 hex digits)")
    return tenant, digest.lower()


def parse_tokens_file(path: str) -> list[tuple[str, str]]:
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SystemExit(f"{path}:{lineno}: expected 'tenant sha256hex'")
        out.append(_check(parts[0], parts[1], f"{path}:{lineno}"))
    return out


def parse_tokens_env(value: str) -> list[tuple[str, str]]:
    out = []
    for n, item in enumerate(value.split(","), 1):
        item = item.strip()
        if not item:
            continue
        tenant, sep, digest = item.rpartition(":")
        if not sep:
            raise SystemExit(f"{TOKENS_ENV} entry {n}: expected 'tenant:sha256hex'")
        out.append(_check(tenant.strip(), digest.strip(), f"{TOKENS_ENV} entry {n}"))
    return out


def _peer_host(peer: str) -> str:
    """grpc's peer string ("ipv4:10.0.0.7:5123", "ipv6:[2001:db8::1]:5123", "unix:/run/x") → its host part."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest[1:rest.find("]")] if rest.startswith("[") else rest.rsplit(":", 1)[0]
    return peer


def _client_key(host: str) -> str:
    """The unit the throttle counts: an IPv4 address, an IPv6 /64 (one host's share), else the string itself."""
    if ":" in host:
        try:
            return str(ipaddress.IPv6Network(f"{host.split('%', 1)[0]}/64", strict=False))
        except ValueError:
            pass
    return host[:64]


class AuthThrottle:
    """Failed authentications counted in fixed windows per client address and per token prefix. Not thread-safe:
    used from the gateway's asyncio loop. At most ``max_entries`` windows are kept (expired ones, then the oldest,
    are dropped first), so an attacker with many addresses costs bounded memory."""

    def __init__(self, per_client: int = 20, per_prefix: int = 100, window_s: float = 60.0, prefix_chars: int = 8,
                 max_entries: int = 100_000, trusted_proxies: str = "", clock: Callable[[], float] = time.monotonic,
                 hold_s: float = 0.0, held_per_client: int = 32, held_max: int = 1024):
        self.per_client, self.per_prefix = per_client, per_prefix
        self.hold_s, self.held_per_client, self.held_max = hold_s, held_per_client, held_max
        self._held: dict[str, int] = {}                        # client → refusals being held now
        self.held = 0                                           # ... all clients together
        self.window_s, self.prefix_chars = window_s, max(1, prefix_chars)
        self.max_entries = max(2, max_entries)
        self.clock = clock
        self._windows: dict[tuple[str, str], list] = {}       # (kind, key) → [window start, failures]
        self.good_prefixes: set[str] = set()                  # prefixes of tokens that authenticated here
        try:
            self._trusted = [ipaddress.ip_network(p.strip(), strict=False)
                             for p in trusted_proxies.split(",") if p.strip()]
        except ValueError as exc:
            raise SystemExit(f"TTS_GATEWAY_TRUSTED_PROXIES: {exc}") from None
        self._trusted_hosts: dict[str, bool] = {}
        self._counted = {k: AUTH_FAILURES.labels(*k) for k in (("throttled", "client"), ("throttled", "prefix"),
                                                                ("invalid", ""))}     # labels() looked up once

    @classmethod
    def from_settings(cls, s: AuthSettings) -> "AuthThrottle":
        return cls(s.auth_failures_per_client, s.auth_failures_per_prefix, s.auth_failure_window_s,
                   s.auth_prefix_chars, s.auth_throttle_entries, s.trusted_proxies, hold_s=s.auth_throttle_hold_s,
                   held_per_client=s.auth_throttle_held_per_client, held_max=s.auth_throttle_held)

    def _trusted_host(self, host: str) -> bool:
        known = self._trusted_hosts.get(host)
        if known is None:
            try:
                ip = ipaddress.ip_address(host)
                known = any(ip in net for net in self._trusted)
            except ValueError:
                known = False
            if len(self._trusted_hosts) > 4096:
                self._trusted_hosts.clear()
            self._trusted_hosts[host] = known
        return known

    def client(self, peer: str, metadata: dict) -> str:
        """The client a call counts for: the peer address, or what a trusted proxy names in x-forwarded-for."""
        host = _peer_host(peer)
        if self._trusted and self._trusted_host(host):
            named = metadata.get("x-forwarded-for", "").rsplit(",", 1)[-1].strip()
            if named:
                host = named
        return _client_key(host)

    def prefix(self, token: str) -> str:
        return token[:self.prefix_chars]

    def check(self, client: str, prefix: str | None = None) -> None:
        """Raise ResourceExhausted (with the time until the window ends) if ``client`` or ``prefix`` is over its
        limit. ``prefix`` None: not checked (no token yet, or one of a valid token)."""
        now = self.clock()
        wait = self._blocked(("client", client), self.per_client, now)
        if wait:
            self._counted["throttled", "client"].inc()
            raise self._refusal(
                client, wait, f"too many failed authentications from this client ({self.per_client} in "
                f"{self.window_s:g} s, TTS_GATEWAY_AUTH_FAILURES_PER_CLIENT); retry in {wait:.1f} s")
        if prefix is not None and prefix not in self.good_prefixes:       # never a prefix a tenant uses
            wait = self._blocked(("prefix", prefix), self.per_prefix, now)
            if wait:
                self._counted["throttled", "prefix"].inc()
                raise self._refusal(
                    client, wait, f"too many failed authentications with tokens beginning like this one "
                    f"({self.per_prefix} in {self.window_s:g} s, TTS_GATEWAY_AUTH_FAILURES_PER_PREFIX); "
                    f"retry in {wait:.1f} s")

    def _refusal(self, client: str, wait: float, message: str) -> ResourceExhausted:
        """The refusal, held for ``hold_s`` (≤ ``wait``) while this client has fewer than ``held_per_client`` and
        everyone fewer than ``held_max`` refusals held: a client calling back to back is slowed to about one call
        per hold per connection; one that opens many calls at once gets the rest at once."""
        held = self._held.get(client, 0)
        if self.hold_s <= 0 or held >= self.held_per_client or self.held >= self.held_max:
            return ResourceExhausted(message, retry_after_s=wait)
        self._held[client] = held + 1
        self.held += 1

        def answered() -> None:
            self.held -= 1
            left = self._held.get(client, 1) - 1
            if left > 0:
                self._held[client] = left
            else:
                self._held.pop(client, None)

        return ResourceExhausted(message, retry_after_s=wait, answer_after_s=min(self.hold_s, wait),
                                 on_answered=answered)

    def _blocked(self, key: tuple[str, str], limit: int, now: float) -> float:
        """Seconds until ``key``'s window ends if it is over ``limit``; 0 if it may try."""
        if limit <= 0:
            return 0.0
        window = self._windows.get(key)
        if window is None:
            return 0.0
        left = window[0] + self.window_s - now
        if left <= 0:
            del self._windows[key]
            return 0.0
        return left if window[1] >= limit else 0.0

    def failed(self, client: str, prefix: str | None = None) -> None:
        self._counted["invalid", ""].inc()
        now = self.clock()
        self._count(("client", client), now)
        if prefix is not None:
            self._count(("prefix", prefix), now)

    def succeeded(self, prefix: str) -> None:
        if len(self.good_prefixes) < 65536:         # bounded by the tokens configured, in practice
            self.good_prefixes.add(prefix)

    def _count(self, key: tuple[str, str], now: float) -> None:
        window = self._windows.get(key)
        if window is not None and now - window[0] < self.window_s:
            window[1] += 1
            return
        self._windows.pop(key, None)              # a new window goes to the end: the dict stays in start order
        while len(self._windows) >= self.max_entries:
            oldest = next(iter(self._windows))    # the earliest start: expired first, else the oldest window
            del self._windows[oldest]
        self._windows[key] = [now, 1]

    def __len__(self) -> int:
        return len(self._windows)


class Authenticator:
    def __init__(self, tokens_file: str = "", tokens: str = "", admins: set[str] = frozenset(),
                 throttle: AuthThrottle | None = None):
        self.admins = set(admins)               # tenants allowed the admin RPCs when auth is on
        self.throttle = throttle if throttle is not None else AuthThrottle()
        entries = (parse_tokens_file(tokens_file) if tokens_file else []) + parse_tokens_env(tokens)
        self.enabled = bool(tokens_file or tokens.strip())
        self._tenants: dict[str, str] = {}
        for tenant, digest in entries:
            other = self._tenants.get(digest)
            if other is not None and other != tenant:
                raise SystemExit(f"the same token hash is given to tenants {other!r} and {tenant!r}")
            self._tenants[digest] = tenant

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> "Authenticator":
        return cls(settings.tokens_file, settings.tokens.get_secret_value(), settings.admins(),
                   AuthThrottle.from_settings(settings))

    def is_admin(self, tenant: str) -> bool:
        """Admin RPCs act on every tenant: allowed with auth off, else only to TTS_GATEWAY_ADMIN_TENANTS."""
        return not self.enabled or tenant in self.admins

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants.values())

    def tenant(self, metadata: dict, peer: str = "") -> str:
        """The caller's tenant. ``peer``: grpc's peer string (``context.peer()``), for the failure throttle."""
        if not self.enabled:
            return DEFAULT_TENANT
        throttle = self.throttle
        client = throttle.client(peer, metadata)
        header = metadata.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        prefix = throttle.prefix(token) if token else None
        throttle.check(client, prefix)            # before any hashing: a throttled client costs a dict lookup
        if not header.lower().startswith("bearer "):
            throttle.failed(client)
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        if not token:
            throttle.failed(client)
            raise Unauthenticated("empty bearer token")
        # the lookup is keyed by sha256(token): its timing can only leak bits of a hash, not of a token
        tenant = self._tenants.get(hash_token(token))
        if tenant is None:
            throttle.failed(client, prefix)
            raise Unauthenticated("invalid token")
        throttle.succeeded(prefix)
        return tenant

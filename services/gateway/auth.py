"""Bearer tokens → tenant. Tokens are stored hashed (sha256 hex), never in clear.

Two sources, merged (auth is on when either is set), both in ``GatewaySettings.auth``:
- ``TTS_GATEWAY_TOKENS_FILE``: one ``tenant sha256hex`` per line, ``#`` starts a comment;
- ``TTS_GATEWAY_TOKENS``: ``tenant:sha256hex,tenant2:sha256hex`` (handy for a k8s Secret as an env var).

Hash a token with ``printf %s "$TOKEN" | sha256sum`` (or ``services.gateway.auth.hash_token``).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from shared.errors import Unauthenticated

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


class Authenticator:
    def __init__(self, tokens_file: str = "", tokens: str = "", admins: set[str] = frozenset()):
        self.admins = set(admins)               # tenants allowed the admin RPCs when auth is on
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
        return cls(settings.tokens_file, settings.tokens.get_secret_value(), settings.admins())

    def is_admin(self, tenant: str) -> bool:
        """Admin RPCs act on every tenant: allowed with auth off, else only to TTS_GATEWAY_ADMIN_TENANTS."""
        return not self.enabled or tenant in self.admins

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants.values())

    def tenant(self, metadata: dict) -> str:
        if not self.enabled:
            return DEFAULT_TENANT
        header = metadata.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        token = header[7:].strip()
        if not token:
            raise Unauthenticated("empty bearer token")
        # the lookup is keyed by sha256(token): its timing can only leak bits of a hash, not of a token
        tenant = self._tenants.get(hash_token(token))
        if tenant is None:
            raise Unauthenticated("invalid token")
        return tenant

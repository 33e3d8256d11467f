"""Bearer tokens → tenant. Tokens are stored hashed (sha256 hex) in a file: one ``tenant hash`` per line."""
from __future__ import annotations

import hashlib
from pathlib import Path

from shared.errors import Unauthenticated

DEFAULT_TENANT = "default"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, tokens_file: str = ""):
        self.enabled = bool(tokens_file)
        self._tenants: dict[str, str] = {}
        if self.enabled:
            for lineno, line in enumerate(Path(tokens_file).read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) != 2 or len(parts[1]) != 64:
                    raise SystemExit(f"{tokens_file}:{lineno}: expected 'tenant sha256hex'")
                self._tenants[parts[1]] = parts[0]

    def tenant(self, metadata: dict) -> str:
        if not self.enabled:
            return DEFAULT_TENANT
        header = metadata.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        tenant = self._tenants.get(hash_token(header[7:].strip()))
        if tenant is None:
            raise Unauthenticated("invalid token")
        return tenant

"""Tenants and their API keys: keys are kept only as SHA-256 digests and compared in constant time.

Each presented key is hashed once and compared against every known digest with
``hmac.compare_digest`` (no early exit on the first match), so neither the position of a match nor
the number of matching leading bytes shows in the response time. The trade-off is a scan over all
digests per request: microseconds for hundreds of tenants, which is the scale a config file holds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from quantgate.config import TenantConfig
from quantgate.gateway.protocol import ApiError

__all__ = ["AuthError", "TenantDirectory"]


class AuthError(ApiError):
    """A missing or unknown key (401)."""


class TenantDirectory:
    def __init__(self, tenants: Iterable[TenantConfig], admin_digest: str | None = None):
        self._entries: list[tuple[bytes, TenantConfig]] = []
        for t in tenants:
            self._entries += [(bytes.fromhex(d), t) for d in t.key_digests()]
        self._admin = bytes.fromhex(admin_digest) if admin_digest else None

    @staticmethod
    def bearer(header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def tenant(self, key: str | None) -> TenantConfig:
        """The tenant owning ``key``; ``AuthError(401)`` when it is missing or unknown."""
        if not key:
            raise AuthError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error",
                            code="missing_api_key")
        digest = hashlib.sha256(key.encode()).digest()
        found: TenantConfig | None = None
        for known, tenant in self._entries:
            if hmac.compare_digest(known, digest):
                found = tenant
        if found is None:
            raise AuthError(401, "invalid API key", "authentication_error", code="invalid_api_key")
        return found

    def is_admin(self, key: str | None) -> bool:
        if self._admin is None or not key:
            return False
        return hmac.compare_digest(self._admin, hashlib.sha256(key.encode()).digest())

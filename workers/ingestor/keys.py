"""API keys of the ingestor: who may post events to which tenant's pipeline.

A key list (a Secret key mounted as a file, or ``--api-keys-file``) holds one key per line as
``TENANT:KEY`` (the key may post to every pipeline of that tenant) or ``TENANT/PIPELINE:KEY`` (only
to that pipeline); blank lines and lines starting with ``#`` are ignored. One ingestor serves one
pipeline: a known key of another tenant or pipeline gets 403, an unknown or missing key 401.

Only SHA-256 digests of keys are kept in memory; a presented key is hashed and compared against
every digest with ``hmac.compare_digest`` without stopping at the first match, so neither the
comparison nor the position of a key leaks through timing. Keys are never logged: errors name a
line number.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from enum import Enum

from alertpipe.workers.errors import ConfigError

__all__ = ["AuthResult", "KeyRing", "Principal", "parse_key_lines"]

logger = logging.getLogger(__name__)

MIN_KEY_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    pipeline: str | None  # None: every pipeline of the tenant

    def allows(self, tenant: str, pipeline: str) -> bool:
        return self.tenant == tenant and (self.pipeline is None or self.pipeline == pipeline)

    def __str__(self) -> str:
        return self.tenant if self.pipeline is None else f"{self.tenant}/{self.pipeline}"


class AuthResult(Enum):
    OK = "ok"
    MISSING = "missing"  # 401
    UNKNOWN = "unknown"  # 401
    FORBIDDEN = "forbidden"  # 403: a valid key of another tenant or pipeline


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def parse_key_lines(text: str, *, source: str = "api keys") -> list[tuple[Principal, bytes]]:
    """(principal, sha256 digest of the key) per line; ConfigError naming the line, never the key."""
    out: list[tuple[Principal, bytes]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        who, sep, key = line.partition(":")
        who, key = who.strip(), key.strip()
        if not sep or not who or not key:
            raise ConfigError(f"{source}:{n}", "expected TENANT:KEY or TENANT/PIPELINE:KEY")
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"{source}:{n}", f"the key is shorter than {MIN_KEY_LENGTH} characters")
        tenant, slash, pipeline = who.partition("/")
        if not tenant or (slash and not pipeline):
            raise ConfigError(f"{source}:{n}", "expected TENANT:KEY or TENANT/PIPELINE:KEY")
        out.append((Principal(tenant, pipeline or None), _digest(key)))
    return out


class KeyRing:
    """The keys one ingestor knows, checked against the tenant and pipeline it serves."""

    def __init__(self, entries: list[tuple[Principal, bytes]]) -> None:
        self._entries = list(entries)

    @classmethod
    def from_text(cls, text: str, *, source: str = "api keys") -> KeyRing:
        return cls(parse_key_lines(text, source=source))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._entries)} keys)"

    def lookup(self, key: str | bytes) -> list[Principal]:
        """Every principal ``key`` is listed for; all digests are compared (no early exit)."""
        d = _digest(key)
        return [p for p, digest in self._entries if hmac.compare_digest(d, digest)]

    def authenticate(self, authorization: str | None, tenant: str, pipeline: str) -> AuthResult:
        """Judge an ``Authorization`` header value (``Bearer KEY``) for this tenant's pipeline."""
        if not authorization:
            return AuthResult.MISSING
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return AuthResult.MISSING
        principals = self.lookup(key)
        if not principals:
            return AuthResult.UNKNOWN
        if any(p.allows(tenant, pipeline) for p in principals):
            return AuthResult.OK
        return AuthResult.FORBIDDEN

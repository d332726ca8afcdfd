"""Gateway API keys: random bearer tokens, stored only as SHA-256 digests in a JSON keys file.

Input: a token presented as ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``.
Output: the ``ApiKey`` it belongs to (emitter identity + the CT 0.1 section 4.4 source roles the
emitter may report), or None.

Wire/file contract: tokens are ``ctp_`` + 32 random bytes (urlsafe base64, 256 bits of entropy).
The keys file holds ``{"version": 1, "keys": [{"id", "sha256", "emitter", "roles", "created_at"}]}``
and never the token itself. A fast hash is deliberate: slow KDFs (bcrypt, scrypt, argon2) exist
to protect low-entropy *passwords* from offline guessing; a 256-bit random token cannot be
guessed, so SHA-256 is as safe and keeps authentication O(1) on the hot path. Lookup is a dict
lookup by digest, so response time does not depend on how much of a secret matched (the
attacker would need SHA-256 preimages to steer it); the found digest is re-checked with
``hmac.compare_digest`` anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

TOKEN_PREFIX = "ctp_"
#: CT 0.1 section 4.4 / schema ``SourceRole``: who reports an event.
SOURCE_ROLES: frozenset[str] = frozenset({"agent", "edge", "origin", "index"})
FILE_VERSION = 1


class KeyFileError(ValueError):
    """The keys file is unreadable or malformed (one line, for the user)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's metadata (never the token)."""

    id: str  # short public identifier: the first 12 hex digits of the digest
    sha256: str
    emitter: str
    roles: frozenset[str]
    created_at: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "emitter": self.emitter,
            "roles": sorted(self.roles),
            "created_at": self.created_at,
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_roles(roles: str | Iterable[str]) -> frozenset[str]:
    """``"agent,edge"`` or an iterable -> a validated role set (ValueError names the bad one)."""
    items = roles.split(",") if isinstance(roles, str) else list(roles)
    out = frozenset(r.strip().lower() for r in items if r.strip())
    if not out:
        raise ValueError("at least one source role is required (agent, edge, origin, index)")
    unknown = sorted(out - SOURCE_ROLES)
    if unknown:
        raise ValueError(f"unknown source role(s) {', '.join(unknown)}: expected agent, edge, origin, index")
    return out


class KeyStore:
    """The keys file, loaded into a digest -> ApiKey map; re-read when the file changes."""

    def __init__(self, path: Path, *, reload_interval: float = 2.0) -> None:
        self.path = Path(path)
        self.reload_interval = reload_interval
        self._by_digest: dict[str, ApiKey] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._load()

    # --- reading ---------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._by_digest, self._mtime = {}, None
            return
        try:
            data = orjson.loads(self.path.read_bytes())
            entries = data["keys"]
            keys = {}
            for e in entries:
                key = ApiKey(
                    id=str(e["id"]),
                    sha256=str(e["sha256"]).lower(),
                    emitter=str(e["emitter"]),
                    roles=parse_roles(e["roles"]),
                    created_at=str(e.get("created_at", "")),
                )
                keys[key.sha256] = key
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise KeyFileError(f"keys file {self.path} is not valid: {type(exc).__name__}: {exc}") from exc
        self._by_digest, self._mtime = keys, stat.st_mtime

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_interval:
            return
        self._checked = now
        try:
            mtime: float | None = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            # A broken file keeps the keys we had; `ctpipe gateway keys list` shows the error.
            with contextlib.suppress(KeyFileError):
                self._load()

    def lookup(self, token: str | None) -> ApiKey | None:
        """The key a presented token belongs to, or None (unknown, empty or malformed)."""
        if not token or len(token) > 256:
            return None
        self._maybe_reload()
        d = digest(token)
        key = self._by_digest.get(d)
        if key is None or not hmac.compare_digest(key.sha256, d):
            return None
        return key

    def list(self) -> list[ApiKey]:
        self._load()
        return sorted(self._by_digest.values(), key=lambda k: (k.created_at, k.id))

    # --- writing ---------------------------------------------------------------------------

    def add(self, emitter: str, roles: str | Iterable[str]) -> tuple[str, ApiKey]:
        """Create a key; returns (token, metadata). The token is not stored and cannot be shown again."""
        emitter = emitter.strip()
        if not emitter:
            raise ValueError("the emitter identity must not be empty")
        role_set = parse_roles(roles)
        self._load()
        token = new_token()
        d = digest(token)
        key = ApiKey(
            id=d[:12],
            sha256=d,
            emitter=emitter,
            roles=role_set,
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        self._by_digest[d] = key
        self._save()
        return token, key

    def revoke(self, key_id: str) -> bool:
        """Remove the key with this id (or digest prefix); True when one was removed."""
        self._load()
        hits = [k for k in self._by_digest.values() if k.id == key_id or k.sha256.startswith(key_id)]
        if len(hits) != 1:
            return False
        del self._by_digest[hits[0].sha256]
        self._save()
        return True

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps(
            {"version": FILE_VERSION, "keys": [k.as_dict() for k in self._by_digest.values()]},
            option=orjson.OPT_INDENT_2,
        )
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".gateway-keys.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._mtime = self.path.stat().st_mtime

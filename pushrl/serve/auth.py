"""API keys with scopes (``decide``, ``admin``), stored hashed, compared in constant time.

Key file (JSON)::

    {"keys": [{"id": "ops", "sha256": "<hex of sha256(key)>", "scopes": ["decide", "admin"]}]}

Keys are random 256-bit tokens (``python -m pushrl.serve.auth new --file keys.json --scopes
decide``), so an unsalted sha256 is enough (a slow KDF such as scrypt protects low-entropy
passwords, which these are not, and would cost milliseconds per request). The digest of the
presented key is compared with every stored digest using :func:`hmac.compare_digest`.
Clients send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pushrl.errors import PushrlError

SCOPES = ("decide", "admin")


class AuthError(PushrlError):
    """Missing/invalid key (401) or a key without the needed scope (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ApiKey:
    """One stored key: its id, the sha256 hex of the key, and its scopes."""

    id: str
    sha256: str
    scopes: frozenset[str]


def digest(key: str) -> str:
    """Hex sha256 of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: str | Path) -> list[ApiKey]:
    """Read and check a key file.

    Raises:
        PushrlError: missing file, invalid JSON, unknown scope or malformed digest.
    """
    p = Path(path)
    if not p.exists():
        raise PushrlError(f"API key file {p} does not exist; create one with "
                          f"`python -m pushrl.serve.auth new --file {p} --scopes decide`")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise PushrlError(f"API key file {p} is not valid JSON ({exc})") from None
    keys = []
    for i, k in enumerate(raw.get("keys", []) if isinstance(raw, dict) else []):
        sha = str(k.get("sha256", ""))
        scopes = frozenset(k.get("scopes", []))
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise PushrlError(f"API key file {p}: key {i} has no valid `sha256` hex digest")
        if not scopes or not scopes <= set(SCOPES):
            raise PushrlError(f"API key file {p}: key {i} scopes {sorted(scopes)} must be a "
                              f"non-empty subset of {list(SCOPES)}")
        keys.append(ApiKey(str(k.get("id", f"key{i}")), sha, scopes))
    if not keys:
        raise PushrlError(f"API key file {p} holds no keys")
    return keys


class KeyChecker:
    """Checks presented keys against the stored digests."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def check(self, presented: str | None, scope: str | None) -> ApiKey:
        """Return the matching key with ``scope`` (any valid key when ``scope`` is None).

        Raises:
            AuthError: 401 without a valid key, 403 when the key lacks ``scope``.
        """
        if not presented:
            raise AuthError(401, "missing API key: send `Authorization: Bearer <key>` or "
                                 "`X-API-Key: <key>`")
        d = digest(presented).encode()
        found = None
        for k in self.keys:  # compare with every key: timing does not reveal which matched
            if hmac.compare_digest(d, k.sha256.encode()):
                found = k
        if found is None:
            raise AuthError(401, "invalid API key")
        if scope is not None and scope not in found.scopes:
            raise AuthError(403, f"API key {found.id!r} lacks the `{scope}` scope")
        return found


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``."""
    if x_api_key:
        return x_api_key
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def new_key(path: str | Path, scopes: list[str], key_id: str | None = None) -> str:
    """Create a key, append its digest to ``path`` (created 0600) and return the key."""
    bad = set(scopes) - set(SCOPES)
    if bad or not scopes:
        raise PushrlError(f"scopes must be a non-empty subset of {list(SCOPES)}, got {scopes}")
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {"keys": []}
    key = "prl_" + secrets.token_urlsafe(32)
    data["keys"].append({"id": key_id or f"key{len(data['keys'])}", "sha256": digest(key),
                         "scopes": sorted(scopes)})
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)
    return key


def _main() -> None:
    ap = argparse.ArgumentParser(prog="python -m pushrl.serve.auth",
                                 description="Create an API key for `pushrl serve`.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("new", help="create a key; prints it once")
    n.add_argument("--file", required=True)
    n.add_argument("--scopes", default="decide", help="comma-separated: decide,admin")
    n.add_argument("--id", default=None)
    a = ap.parse_args()
    print(new_key(a.file, [s for s in a.scopes.split(",") if s], a.id))


if __name__ == "__main__":
    _main()

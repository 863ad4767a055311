"""Password hashing with Argon2id (argon2-cffi's defaults follow RFC 9106's second choice)."""

from __future__ import annotations

import hashlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
MIN_LENGTH = 10


def hash_password(password: str) -> str:
    """Hash a password for storage; ValueError when it is too short."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches `stored_hash`; False for a missing or broken hash."""
    if not stored_hash:
        # Spend the same time as a real check, so timing does not reveal unknown users.
        try:
            _hasher.verify(_DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            pass
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash("lesfocus-dummy-password")


def password_marker(password_hash: str | None) -> str:
    """A short digest of a password hash, kept in sessions and API tokens: a new password makes
    every session and token issued before it invalid."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]

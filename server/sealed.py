"""Secrets the server must keep and use again (a Zermelo API token, a WebUntis password, an OpenID
client secret), stored in the database sealed with a key that is not in the database.

A sealed value is `v1.<key id>.<nonce + AES-256-GCM ciphertext, base64url>`. The caller's
`context` (for example `timetable-source:12:token`) is the GCM associated data: a sealed value
copied to another row, or another field, does not open there. The keys live in one file, by
default `<instance>/sealing-keys` (LESFOCUS_SEALING_KEY_FILE), readable by its owner only: every
server process and the worker must read the same file, and a backup of the database is worth
nothing without it. The first line is the key that seals; later lines are older keys that still
open what they sealed, so a new key can be put first without losing anything.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app

_VERSION = "v1"
_NONCE_BYTES = 12
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64decode(text: str) -> bytes:
    # urlsafe_b64decode skips characters outside the alphabet instead of refusing them.
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SealedError(ValueError):
    """A sealed value that cannot be opened here (damaged, another row's, or an unknown key)."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"lesfocus-sealing-key-id" + key).hexdigest()[:12]


@dataclass(frozen=True)
class Sealer:
    """Seals with the first key and opens with any key it holds."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a sealer needs at least one key")
        for key in self.keys:
            if len(key) != 32:
                raise ValueError("a sealing key is 32 bytes")

    def seal(self, plaintext: str, context: str) -> str:
        """The sealed form of `plaintext`, which opens only with the same `context`."""
        key = self.keys[0]
        nonce = secrets.token_bytes(_NONCE_BYTES)
        body = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        blob = base64.urlsafe_b64encode(nonce + body).decode("ascii").rstrip("=")
        return f"{_VERSION}.{_key_id(key)}.{blob}"

    def unseal(self, sealed: str, context: str) -> str:
        """The plaintext of a value `seal` made with this `context`; SealedError otherwise."""
        version, _, rest = sealed.partition(".")
        key_id, _, blob = rest.partition(".")
        if version != _VERSION or not key_id or not blob:
            raise SealedError("this is not a sealed value of this version")
        by_id = {_key_id(key): key for key in self.keys}
        key = by_id.get(key_id)
        if key is None:
            raise SealedError("sealed with a key this server does not have "
                              "(is LESFOCUS_SEALING_KEY_FILE the same file in every process?)")
        try:
            raw = _b64decode(blob)
        except ValueError:
            raise SealedError("the sealed value is damaged") from None
        if len(raw) <= _NONCE_BYTES:
            raise SealedError("the sealed value is damaged")
        try:
            plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                        context.encode("utf-8"))
        except InvalidTag:
            raise SealedError("the sealed value is damaged or belongs elsewhere") from None
        return plain.decode("utf-8")


def _read_keys(path: Path) -> tuple[bytes, ...]:
    keys = []
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = _b64decode(line)
        except ValueError:
            raise ValueError(f"{path}, line {number}: not a base64url key") from None
        if len(key) != 32:
            raise ValueError(f"{path}, line {number}: a sealing key is 32 bytes, "
                             f"this one is {len(key)}")
        keys.append(key)
    if not keys:
        raise ValueError(f"{path} holds no sealing key")
    return tuple(keys)


def new_key_line() -> str:
    """A fresh key as one line of the key file."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")


def load_or_create_sealer(path: Path) -> Sealer:
    """The sealer of the key file at `path`, which is made (owner-only) when it is missing.

    Made in a private temporary file and linked into place, so two processes starting at once
    agree on one key and neither reads a half-written file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(new_key_line() + "\n")
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            temporary.unlink(missing_ok=True)
    return Sealer(_read_keys(path))


def seal(plaintext: str, context: str) -> str:
    """Seal with the current app's key (see the module's docstring for `context`)."""
    sealer: Sealer = current_app.extensions["lesfocus.sealer"]
    return sealer.seal(plaintext, context)


def unseal(sealed: str, context: str) -> str:
    """Open a value `seal` made for the same `context`; SealedError when it cannot be."""
    sealer: Sealer = current_app.extensions["lesfocus.sealer"]
    return sealer.unseal(sealed, context)

"""All JWT work: the server's Ed25519 policy-signing key, policy JWS, agent and API tokens.

Every decode names its algorithms explicitly (EdDSA for keys of ours and of agents), so a token
with `alg: none` or HS256 keyed with a public key is refused (RFC 8725 §3.1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK (RFC 8037, OKP/Ed25519) of a public key, with its RFC 7638 thumbprint as `kid`."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = _b64url(raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"),
                           sort_keys=True)
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def load_public_key(text: str | dict[str, Any]) -> Ed25519PublicKey:
    """Parse an Ed25519 public key given as PEM or as a JWK; ValueError when it is not one."""
    if isinstance(text, dict):
        if text.get("kty") != "OKP" or text.get("crv") != "Ed25519" or not isinstance(
                text.get("x"), str):
            raise ValueError("the JWK is not an Ed25519 (OKP) public key")
        try:
            raw = base64.urlsafe_b64decode(text["x"] + "=" * (-len(text["x"]) % 4))
            return Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, TypeError) as err:
            raise ValueError(f"the JWK's x is not an Ed25519 key: {err}") from None
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError) as err:
        raise ValueError(f"not a PEM public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the key is not an Ed25519 key")
    return key


def public_key_pem(key: Ed25519PublicKey) -> str:
    """A public key as PEM text."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class SigningKey:
    """The server's policy-signing key pair."""

    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def kid(self) -> str:
        return public_jwk(self.public)["kid"]

    def jwks(self) -> dict[str, Any]:
        """The public half as a JWKS document."""
        return {"keys": [public_jwk(self.public)]}

    def sign(self, claims: dict[str, Any]) -> str:
        """Sign `claims` as a compact JWS with EdDSA."""
        return jwt.encode(claims, self.private, algorithm=ALGORITHM, headers={"kid": self.kid})


def load_or_create_signing_key(path: Path) -> SigningKey:
    """Read the PEM private key at `path`, creating it (mode 0600) on first start."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return SigningKey(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # O_EXCL: two processes starting at once must not both write a key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_signing_key(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return SigningKey(key)

"""All JWT work: the server's Ed25519 policy-signing key, policy JWS, agent and API tokens.

Every decode names its algorithms explicitly (EdDSA for keys of ours and of agents), so a token
with `alg: none` or HS256 keyed with a public key is refused (RFC 8725 §3.1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
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


# edwards25519 (RFC 8032 §5.1): the field prime, the curve constant d, and a square root of -1.
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _point_problem(raw: bytes) -> str | None:
    """Why the 32 bytes are no public key to trust, or None.

    OpenSSL takes any 32 bytes. A point of small order (the 8 points whose eighth multiple is
    the identity, under 14 encodings) is a key that many signatures verify under, so whoever knows
    the gateway's id could forge its tokens; a non-canonical encoding names a point twice.
    """
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return "its encoding is not canonical"
    # x^2 = (y^2 - 1) / (d y^2 + 1), and a square root by RFC 8032 §5.1.3.
    y2 = y * y % _P
    u, v = (y2 - 1) % _P, (_D * y2 + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P:
        x = x * _SQRT_M1 % _P
        if (v * x * x - u) % _P:
            return "it is not a point of the curve"
    if x == 0 and sign:
        return "its encoding is not canonical"
    if x & 1 != sign:
        x = _P - x
    for _ in range(3):  # eight times the point
        t = _D * x * x * y * y % _P
        x, y = (2 * x * y * pow(1 + t, _P - 2, _P) % _P,
                (y * y + x * x) * pow(1 - t, _P - 2, _P) % _P)
    if (x, y) == (0, 1):
        return "it is a point of small order (a key that forges signatures)"
    return None


def _checked(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    problem = _point_problem(raw)
    if problem is not None:
        raise ValueError(f"the key is refused: {problem}")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(text: str | dict[str, Any]) -> Ed25519PublicKey:
    """Parse an Ed25519 public key given as PEM or as a JWK; ValueError when it is not one, or
    is a point no one should trust (small order, non-canonical; see `_point_problem`)."""
    if isinstance(text, dict):
        if text.get("kty") != "OKP" or text.get("crv") != "Ed25519" or not isinstance(
                text.get("x"), str):
            raise ValueError("the JWK is not an Ed25519 (OKP) public key")
        try:
            raw = base64.urlsafe_b64decode(text["x"] + "=" * (-len(text["x"]) % 4))
        except (ValueError, TypeError) as err:
            raise ValueError(f"the JWK's x is not an Ed25519 key: {err}") from None
        return _checked(raw)
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError) as err:
        raise ValueError(f"not a PEM public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the key is not an Ed25519 key")
    return _checked(key.public_bytes(serialization.Encoding.Raw,
                                     serialization.PublicFormat.Raw))


def public_key_pem(key: Ed25519PublicKey) -> str:
    """A public key as PEM text."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def decode_at(token: str, key: Any, *, audience: str | list[str], now: float | None = None,
              leeway: float = 0, require: tuple[str, ...] = ("exp",)) -> dict[str, Any]:
    """Verify a JWT (EdDSA only) and its time claims at `now` (default: the clock); its claims.

    PyJWT checks `exp` and `nbf` against the wall clock it reads itself; here the caller passes
    the instant, so a test (or a replay of the past) verifies at the time it means. Raises
    `jwt.InvalidTokenError` (its subclasses ExpiredSignatureError, ImmatureSignatureError).
    """
    claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=audience,
                        options={"require": list(require), "verify_exp": False,
                                 "verify_nbf": False, "verify_iat": False})
    current = time.time() if now is None else now
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise jwt.DecodeError(f"the {name} claim must be a number")
    if "exp" in claims and claims["exp"] <= current - leeway:
        raise jwt.ExpiredSignatureError("Signature has expired")
    if "nbf" in claims and claims["nbf"] > current + leeway:
        raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
    if "iat" in claims and claims["iat"] > current + leeway:
        raise jwt.ImmatureSignatureError("The token is not yet valid (iat)")
    return claims


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

    def verify_policy(self, token: str, gateway_id: str, now: float | None = None
                      ) -> dict[str, Any]:
        """The claims of a policy this key signed for `gateway_id`, unexpired at `now`."""
        return decode_at(token, self.public, audience=gateway_id, now=now,
                         require=("exp", "iat", "aud", "iss"))


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


# --- Agent tokens: JWTs a gateway's agent signs with its own key (SPEC §4) ---------------------

class TokenError(ValueError):
    """A bearer token that must be refused; the message says why (safe to show the client)."""


def unverified_subject(token: str) -> str:
    """The `sub` claim of a JWT before its signature is checked (only to find the key to check it).

    TokenError when the token is not a JWT or names no subject.
    """
    try:
        # One parse for both parts: every agent request comes through here.
        unverified = jwt.decode_complete(token, options={"verify_signature": False})
        header, claims = unverified["header"], unverified["payload"]
    except jwt.InvalidTokenError as err:
        raise TokenError(f"malformed token: {err}") from None
    if header.get("alg") != ALGORITHM:
        raise TokenError(f"token algorithm must be {ALGORITHM}, not {header.get('alg')!r}")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("token has no subject (sub)")
    return sub


def verify_agent_token(token: str, public_key: Ed25519PublicKey, *, gateway_id: str,
                       audience: list[str], max_lifetime: int, now: float | None = None,
                       leeway: int = 30) -> dict[str, Any]:
    """Verify an agent's request token and return its claims; TokenError says why it is refused.

    EdDSA only, signed by `public_key`, `sub` == `gateway_id`, `aud` one of `audience`, `exp`
    required and the lifetime (`iat`..`exp`, or now..`exp` without `iat`) at most `max_lifetime`.
    """
    try:
        claims = decode_at(token, public_key, audience=audience, now=now, leeway=leeway,
                           require=("exp", "sub", "aud"))
    except jwt.InvalidTokenError as err:
        raise TokenError(str(err) or type(err).__name__) from None
    if claims.get("sub") != gateway_id:
        raise TokenError("token subject does not match the gateway")
    exp = claims["exp"]
    current = time.time() if now is None else now
    iat = claims.get("iat")
    if iat is not None:
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise TokenError("iat must be a number")
        if exp - iat > max_lifetime:
            raise TokenError(f"token lifetime {int(exp - iat)} s exceeds {max_lifetime} s")
    if exp - current > max_lifetime + leeway:
        raise TokenError(f"token expires more than {max_lifetime} s from now")
    return claims


# --- API tokens: short-lived bearer tokens for dashboard users and scripts ----------------------

# A distinct audience and `typ` (RFC 9068 "at+jwt"): an API token never verifies as a policy
# (aud = gateway id) and is signed by the server's key, so it never verifies as an agent token.
API_TOKEN_AUDIENCE = "urn:lesfocus:api"
API_TOKEN_TYPE = "at+jwt"


def issue_api_token(key: SigningKey, *, person_id: int, school_id: int, minutes: int,
                    issuer: str, password: str, now: float | None = None) -> tuple[str, int]:
    """Issue an API token for a person; returns (token, expiry as Unix time). `password` is the
    person's password marker (server/passwords.py): a new password refuses the token."""
    issued = int(time.time() if now is None else now)
    expires = issued + minutes * 60
    claims = {"iss": issuer, "aud": API_TOKEN_AUDIENCE, "sub": str(person_id), "sch": school_id,
              "iat": issued, "exp": expires, "jti": secrets.token_urlsafe(12), "pwd": password}
    token = jwt.encode(claims, key.private, algorithm=ALGORITHM,
                       headers={"kid": key.kid, "typ": API_TOKEN_TYPE})
    return token, expires


def verify_api_token(key: SigningKey, token: str, now: float | None = None) -> dict[str, Any]:
    """Verify an API token of `issue_api_token` at `now`; TokenError says why it is refused."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != API_TOKEN_TYPE:
            raise TokenError("not an API token")
        claims = decode_at(token, key.public, audience=API_TOKEN_AUDIENCE, now=now,
                           require=("exp", "iat", "sub", "aud", "pwd"))
    except jwt.InvalidTokenError as err:
        raise TokenError(str(err) or type(err).__name__) from None
    if not str(claims["sub"]).isdigit():
        raise TokenError("token subject is not a person")
    return claims

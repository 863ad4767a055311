"""Sign-in with the school account: OpenID Connect with Authlib (issue 15).

The authorization code flow with PKCE (S256), `state` and `nonce`. The provider's endpoints come
from its discovery document (`<issuer>/.well-known/openid-configuration`, whose `issuer` must be
the configured one); its keys from its `jwks_uri`. The ID token is checked here: signature with a
key of the provider's JWKS (an asymmetric algorithm the provider advertises; never `none` or a
shared-secret HMAC), `iss`, `aud` (and `azp` when there are several audiences), `exp`, `iat`,
`nonce`. A token signed with a `kid` the cached JWKS lacks fetches the JWKS once more (the
provider rotated its keys) before it is refused.

Nothing here is in a request's language: failures are `SsoError`s with a `kind` the dashboard
turns into a Dutch message; their English `detail` is for the log and never holds a secret.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from .extensions import db
from .models import SSO_USERNAME_CLAIMS, Person, SsoProvider
from .sealed import seal, unseal

log = logging.getLogger(__name__)

# Asymmetric algorithms only: an HMAC key would be the client secret, `none` no signature.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                      "ES512", "EdDSA")
SCOPE = "openid email profile"
DISCOVERY_SECONDS = 3600  # how long a discovery document is reused
LEEWAY_SECONDS = 60  # clock difference allowed between us and the provider
PENDING_SECONDS = 15 * 60  # how long a sign-in may stay at the provider's pages
PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
MAX_DOCUMENT_BYTES = 512 * 1024


class SsoError(Exception):
    """A sign-in that cannot go on. `kind`: unreachable (the provider did not answer well),
    refused (the provider said no), rejected (its answer failed a check), state (the callback
    does not belong to a sign-in this browser began)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def secret_context(provider: SsoProvider) -> str:
    """The sealing context of a provider's client secret (the row's id: a copy elsewhere is
    worthless)."""
    return f"sso-provider:{provider.id}:client-secret"


def set_client_secret(provider: SsoProvider, secret: str) -> None:
    """Seal `secret` into `provider` (flushed first, so it has its id)."""
    if provider.id is None:
        db.session.flush()
    provider.client_secret = seal(secret, secret_context(provider))


def check_provider_fields(name: str, issuer: str, client_id: str, secret: str,
                          username_claim: str) -> list[str]:
    """What is wrong with a provider's settings (English, for the CLI); empty when nothing."""
    problems = []
    if not PROVIDER_NAME.fullmatch(name or "") or name.lower() == "callback":
        problems.append("the name: 1 to 64 letters, digits, spaces or . _ -, starting with a "
                        "letter or digit")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", issuer or "") or len(issuer) > 500:
        problems.append("the issuer: an https:// address without ? or # (at most 500 "
                        "characters), as the provider documents it")
    elif issuer.startswith("http://") and not re.match(r"http://(127\.|localhost[:/]|\[::1\])",
                                                       issuer + "/"):
        problems.append("the issuer: https:// is required (http:// only on this machine)")
    if not client_id or len(client_id) > 255 or any(c.isspace() for c in client_id):
        problems.append("the client id: 1 to 255 characters without spaces")
    if not secret or len(secret) > 2000:
        problems.append("the client secret: empty or longer than 2000 characters")
    if username_claim not in SSO_USERNAME_CLAIMS:
        problems.append(f"the username claim: one of {', '.join(SSO_USERNAME_CLAIMS)}")
    return problems


def find_provider(name: str) -> SsoProvider | None:
    """The provider called `name` (any case)."""
    if not name or len(name) > 64:
        return None
    return db.session.scalar(select(SsoProvider).where(
        func.lower(SsoProvider.name) == name.lower()))


# --- what the provider publishes, cached per process ------------------------------------------

_lock = threading.Lock()
_discovery: dict[str, tuple[float, dict[str, Any]]] = {}
_jwks: dict[str, KeySet] = {}


def forget_cached(issuer: str | None = None) -> None:
    """Drop cached discovery documents and key sets (all, or the issuer's)."""
    with _lock:
        if issuer is None:
            _discovery.clear()
            _jwks.clear()
        else:
            document = _discovery.pop(issuer, (0.0, {}))[1]
            _jwks.pop(document.get("jwks_uri", ""), None)


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False,
                                headers={"Accept": "application/json"})
    except requests.RequestException as err:
        raise SsoError("unreachable", f"{url}: {type(err).__name__}") from None
    if response.status_code != 200:
        raise SsoError("unreachable", f"{url}: HTTP {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise SsoError("unreachable", f"{url}: the document is too large")
    try:
        document = response.json()
    except ValueError:
        raise SsoError("unreachable", f"{url}: not JSON") from None
    if not isinstance(document, dict):
        raise SsoError("unreachable", f"{url}: not a JSON object")
    return document


def discover(issuer: str, timeout: float, now: float | None = None) -> dict[str, Any]:
    """The provider's discovery document (cached for DISCOVERY_SECONDS)."""
    now = time.monotonic() if now is None else now
    with _lock:
        cached = _discovery.get(issuer)
    if cached is not None and now - cached[0] < DISCOVERY_SECONDS:
        return cached[1]
    document = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout)
    if document.get("issuer") != issuer:
        raise SsoError("unreachable", f"the discovery document names issuer "
                                      f"{str(document.get('issuer'))[:200]!r}, not {issuer!r}")
    # Plain http only for an issuer that is itself on http (this machine: tests, a lab).
    schemes = ("https://", "http://") if issuer.startswith("http://") else ("https://",)
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(document.get(field), str) or not document[field].startswith(schemes):
            raise SsoError("unreachable", f"the discovery document lacks an https {field}")
    with _lock:
        _discovery[issuer] = (now, document)
    return document


def _key_set(jwks_uri: str, timeout: float, refetch: bool = False) -> KeySet:
    with _lock:
        keys = None if refetch else _jwks.get(jwks_uri)
    if keys is not None:
        return keys
    document = _get_json(jwks_uri, timeout)
    usable = [key for key in document.get("keys", []) if isinstance(key, dict)
              and key.get("use", "sig") == "sig" and key.get("kty") in ("RSA", "EC", "OKP")]
    try:
        keys = KeySet.import_key_set({"keys": usable})
    except (JoseError, ValueError, TypeError) as err:
        raise SsoError("unreachable", f"{jwks_uri}: unusable keys ({err})") from None
    with _lock:
        _jwks[jwks_uri] = keys
    return keys


# --- the flow ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pending:
    """What the browser's session keeps between leaving for the provider and coming back."""

    provider: str
    state: str
    nonce: str
    verifier: str
    next: str
    started: int = 0  # Unix time: a sign-in older than PENDING_SECONDS is not finished

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "state": self.state, "nonce": self.nonce,
                "verifier": self.verifier, "next": self.next, "started": self.started}

    @classmethod
    def from_dict(cls, data: Any) -> Pending | None:
        if not isinstance(data, dict):
            return None
        try:
            values = {field: data[field] for field in
                      ("provider", "state", "nonce", "verifier", "next")}
        except KeyError:
            return None
        if not all(isinstance(value, str) for value in values.values()):
            return None
        started = data.get("started")
        if not isinstance(started, int) or isinstance(started, bool):
            return None
        return cls(**values, started=started)


def _client(provider: SsoProvider, document: dict[str, Any], redirect_uri: str,
            with_secret: bool) -> OAuth2Session:
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    method = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
    secret = unseal(provider.client_secret, secret_context(provider)) if with_secret else None
    return OAuth2Session(provider.client_id, secret, token_endpoint_auth_method=method,
                         scope=SCOPE, redirect_uri=redirect_uri, code_challenge_method="S256")


def begin(provider: SsoProvider, redirect_uri: str, next_url: str, now: datetime,
          timeout: float) -> tuple[str, Pending]:
    """The provider's authorization URL to send the browser to, and what to keep until it
    comes back."""
    document = discover(provider.issuer, timeout)
    pending = Pending(provider=provider.name, state=secrets.token_urlsafe(32),
                      nonce=secrets.token_urlsafe(32), verifier=secrets.token_urlsafe(64),
                      next=next_url, started=int(now.timestamp()))
    client = _client(provider, document, redirect_uri, with_secret=False)
    url, _ = client.create_authorization_url(document["authorization_endpoint"],
                                             state=pending.state, code_verifier=pending.verifier,
                                             nonce=pending.nonce)
    return url, pending


def finish(provider: SsoProvider, pending: Pending, args: dict[str, str], redirect_uri: str,
           now: datetime, timeout: float) -> tuple[dict[str, Any], str]:
    """The checked ID token claims of the callback with query `args`, and the ID token;
    SsoError otherwise."""
    returned_state = args.get("state") or ""
    if not secrets.compare_digest(returned_state.encode(), pending.state.encode()):
        raise SsoError("state", "the state does not match the sign-in this browser began")
    if not 0 <= now.timestamp() - pending.started <= PENDING_SECONDS:
        raise SsoError("state", "the sign-in began too long ago")
    document = discover(provider.issuer, timeout)
    if "iss" in args and args["iss"] != provider.issuer:  # RFC 9207 mix-up defence
        raise SsoError("rejected", "the callback names another issuer")
    if args.get("error"):
        raise SsoError("refused", f"the provider answered {args['error'][:100]!r}")
    code = args.get("code")
    if not code:
        raise SsoError("rejected", "the callback carries no code")
    client = _client(provider, document, redirect_uri, with_secret=True)
    try:
        token = client.fetch_token(document["token_endpoint"], grant_type="authorization_code",
                                   code=code, code_verifier=pending.verifier, timeout=timeout)
    except requests.RequestException as err:
        raise SsoError("unreachable", f"token endpoint: {type(err).__name__}") from None
    except Exception as err:  # Authlib's OAuthError and friends: the provider said no
        raise SsoError("refused", f"token endpoint: {type(err).__name__}") from None
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise SsoError("rejected", "the token response holds no ID token")
    claims = check_id_token(provider, document, id_token, pending.nonce, now, timeout)
    if provider.username_claim not in claims and isinstance(token.get("access_token"), str):
        claims = _with_userinfo(provider, document, claims, token["access_token"], timeout)
    return claims, id_token


def _with_userinfo(provider: SsoProvider, document: dict[str, Any], claims: dict[str, Any],
                   access_token: str, timeout: float) -> dict[str, Any]:
    """The ID token's claims plus the username claim from the UserInfo endpoint, for providers
    that put it there only (OIDC Core 5.3.2: its `sub` must be the ID token's)."""
    endpoint = document.get("userinfo_endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        return claims
    try:
        response = requests.get(endpoint, timeout=timeout, allow_redirects=False,
                                headers={"Authorization": f"Bearer {access_token}",
                                         "Accept": "application/json"})
        info = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        raise SsoError("unreachable", "userinfo endpoint did not answer") from None
    if not isinstance(info, dict) or info.get("sub") != claims.get("sub"):
        raise SsoError("rejected", "the userinfo answer is for another subject")
    extra = {name: info[name] for name in (provider.username_claim, "email_verified", "name")
             if name in info and name not in claims}
    return {**claims, **extra}


def _header(id_token: str) -> dict[str, Any]:
    try:
        part = id_token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError):
        raise SsoError("rejected", "the ID token is not a JWT") from None
    if not isinstance(header, dict):
        raise SsoError("rejected", "the ID token is not a JWT")
    return header


def check_id_token(provider: SsoProvider, document: dict[str, Any], id_token: str, nonce: str,
                   now: datetime, timeout: float) -> dict[str, Any]:
    """The claims of `id_token` once its signature and claims pass (OIDC Core 3.1.3.7)."""
    header = _header(id_token)
    advertised = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = [alg for alg in SIGNING_ALGORITHMS if alg in advertised]
    if header.get("alg") not in algorithms:
        raise SsoError("rejected", f"the ID token is signed with {str(header.get('alg'))[:20]!r}, "
                                   f"not one of {algorithms}")
    keys = _key_set(document["jwks_uri"], timeout)
    kid = header.get("kid")
    if isinstance(kid, str) and not _has_kid(keys, kid):
        keys = _key_set(document["jwks_uri"], timeout, refetch=True)  # the provider rotated
    try:
        decoded = jwt.decode(id_token, keys, algorithms=algorithms)
    except JoseError as err:
        raise SsoError("rejected", f"the ID token's signature: {type(err).__name__}") from None
    claims = decoded.claims
    registry = jwt.JWTClaimsRegistry(
        now=int(now.timestamp()), leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": provider.client_id},
        exp={"essential": True}, iat={"essential": True}, sub={"essential": True},
        nonce={"essential": True, "value": nonce})
    try:
        registry.validate(claims)
    except JoseError as err:
        raise SsoError("rejected", f"the ID token's claims: {type(err).__name__} "
                                   f"({getattr(err, 'claim', '')})") from None
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != \
            provider.client_id:
        raise SsoError("rejected", "the ID token has several audiences and another azp")
    return claims


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


# --- who signs in -----------------------------------------------------------------------------

def identity(provider: SsoProvider, claims: dict[str, Any]) -> str | None:
    """The value of the provider's username claim, lower-cased; None when there is none."""
    value = claims.get(provider.username_claim)
    if not isinstance(value, str) or not 3 <= len(value.strip()) <= 254:
        return None
    if provider.username_claim == "email" and claims.get("email_verified") is False:
        return None  # an address the provider itself has not checked matches no one
    return value.strip().lower()


def find_person(provider: SsoProvider, value: str) -> Person | None:
    """The person whose e-mail is `value`, if the provider may sign their school in."""
    person = db.session.scalar(select(Person).where(Person.email == value))
    if person is None:
        return None
    if provider.schools and person.school_id not in {school.id for school in provider.schools}:
        return None
    return person


def new_teacher(provider: SsoProvider, value: str, claims: dict[str, Any]) -> Person | None:
    """A teacher login for `value` in the provider's one school (when IT allows it)."""
    from . import audit
    from .people import username_taken, valid_username
    if not provider.create_accounts or len(provider.schools) != 1:
        return None
    if not valid_username(value) or username_taken(value):
        return None
    school = provider.schools[0]
    name = claims.get("name") if isinstance(claims.get("name"), str) else ""
    person = Person(school_id=school.id, username=value, email=value,
                    display_name=(name or value)[:200], roles=["teacher"])
    db.session.add(person)
    db.session.flush()
    audit.record("person.create_login", school_id=school.id, actor=f"sso:{provider.name}",
                 object_type="person", object_id=person.id, username=value, roles=["teacher"],
                 via=provider.name)
    return person


def normal_email(text: str) -> str | None:
    """An e-mail address as stored (trimmed, lower-cased), or None when it is not one."""
    text = (text or "").strip().lower()
    if not re.fullmatch(r"[^\s@]{1,64}@[^\s@]+\.[^\s@]+", text) or len(text) > 254:
        return None
    return text

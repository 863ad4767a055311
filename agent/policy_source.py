"""Enrolment and the signed policy: key pair, pinned server keys, verification, on-disk store, sync.

Trust: the agent verifies every policy with the server keys it pinned at enrolment and with EdDSA
only (RFC 8037), so `alg: none`, HS256 keyed with a public key (RFC 8725 §3.1) or a key the server
merely announces later are refused. A refused or missing policy never replaces the one in force.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lesfocus_policy import (FORMAT, MAX_ANSWER_BYTES, MAX_POLICY_BYTES, Policy,
                             UnsupportedFormat, parse_claims)

from .errors import ConfigError, PolicyError, ServerError

log = logging.getLogger("lesfocus.agent.policy")

ALGORITHMS = ["EdDSA"]
KEY_FILE = "agent-key.pem"
ENROLLMENT_FILE = "enrollment.json"
POLICY_FILE = "policy.jws"
AGENT_TOKEN_SECONDS = 240  # SPEC: lifetime <= 5 min; leave room for clock skew


# --- files -----------------------------------------------------------------------------------

def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so a crash leaves the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK (RFC 8037, OKP/Ed25519) of a public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def jwk_public_key(jwk: Any) -> Ed25519PublicKey:
    """The Ed25519 public key of a JWK; ValueError for anything else."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" \
            or not isinstance(jwk.get("x"), str):
        raise ValueError("not an Ed25519 (OKP) JWK")
    if jwk.get("alg") not in (None, "EdDSA"):
        raise ValueError(f"JWK alg {jwk.get('alg')!r} is not EdDSA")
    try:
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as err:
        raise ValueError(f"JWK x is not an Ed25519 key: {err}") from None


def load_or_create_agent_key(state_dir: Path) -> Ed25519PrivateKey:
    """The agent's Ed25519 key in `state_dir` (mode 0600), made on first use."""
    path = state_dir / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{path}: not a PEM private key: {err}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path}: not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    atomic_write(path, key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return key


@dataclass(frozen=True)
class Enrollment:
    """What enrolment pinned: the server, our gateway id, and the server's policy keys."""

    server_url: str
    gateway_id: str
    server_keys: tuple[dict[str, Any], ...]

    def public_keys(self) -> list[tuple[str | None, Ed25519PublicKey]]:
        """The pinned keys as (kid, key) pairs."""
        return [(jwk.get("kid"), jwk_public_key(jwk)) for jwk in self.server_keys]


def parse_enrollment(data: Any, where: str) -> Enrollment:
    """An Enrollment from its JSON form; ConfigError names `where` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: not a JSON object")
    url, gateway_id, keys = data.get("server_url"), data.get("gateway_id"), data.get("server_keys")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: server_url must be an http(s) URL")
    if not isinstance(gateway_id, str) or not gateway_id:
        raise ConfigError(f"{where}: gateway_id must be a non-empty string")
    if isinstance(keys, dict):
        keys = keys.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"{where}: server_keys must be a non-empty list of JWKs")
    for n, jwk in enumerate(keys):
        try:
            jwk_public_key(jwk)
        except ValueError as err:
            raise ConfigError(f"{where}: server_keys[{n}]: {err}") from None
    return Enrollment(server_url=url.rstrip("/"), gateway_id=gateway_id, server_keys=tuple(keys))


def load_enrollment(state_dir: Path) -> Enrollment:
    """The enrolment pinned in `state_dir`; ConfigError when the agent is not enrolled."""
    path = state_dir / ENROLLMENT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: run `lesfocus-agent enroll` first") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from None
    return parse_enrollment(data, str(path))


# --- the policy document ---------------------------------------------------------------------
# Its types, formats and strict parser are lesfocus_policy's (shared with the server).

_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")


def _base64url(segment: str, what: str) -> bytes:
    """One segment of a compact JWS (RFC 7515 §2: base64url without padding), strictly."""
    raw = segment.encode("ascii", "replace")
    # One regular expression over the whole segment: PyJWT checks a policy of a few hundred
    # KiB character by character in Python, three times per verification (0.4 s at 240
    # classrooms on the CI machine), which is why the agent verifies its policy itself.
    if not _BASE64URL.fullmatch(raw) or len(raw) % 4 == 1:
        raise PolicyError(f"the policy is refused: its {what} is not base64url")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise PolicyError(f"the policy is refused: its {what} is not JSON") from None
    if not isinstance(value, dict):
        raise PolicyError(f"the policy is refused: its {what} is not a JSON object")
    return value


def verify_policy(token: Any, enrollment: Enrollment, now: float | None = None,
                  previous: Policy | None = None) -> Policy:
    """Verify a policy JWS with the pinned keys (EdDSA only), for us, unexpired; parse it.

    RFC 7515 §5.2 for a compact JWS with one algorithm: the header must name EdDSA (RFC 8037)
    and no critical extension; the signature over `header.payload` must verify with a pinned
    key (the one named by `kid`, if any). `previous` (the policy in force) lets the parser take
    over the segments that did not change.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        raise PolicyError("the policy is not a compact JWS")
    if len(token) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is {len(token)} bytes, more than the documented maximum "
                          f"of {MAX_POLICY_BYTES}")
    header_part, payload_part, signature_part = token.split(".")
    try:
        header = _json_object(_base64url(header_part, "header"), "header")
    except PolicyError as err:
        raise PolicyError(f"the policy's JWS header is unreadable: {err}") from None
    if header.get("alg") not in ALGORITHMS:
        raise PolicyError(f"the policy is signed with alg {header.get('alg')!r}, not EdDSA")
    if "crit" in header:
        raise PolicyError(f"the policy's header names critical extensions {header['crit']!r}, "
                          "which this agent does not implement")
    keys = enrollment.public_keys()
    kid = header.get("kid")
    candidates = [key for key_id, key in keys if kid is None or key_id in (None, kid)]
    if not candidates:
        raise PolicyError(f"the policy is signed with key {kid!r}, which is not pinned")
    signature = _base64url(signature_part, "signature")
    signed = f"{header_part}.{payload_part}".encode("ascii")
    for key in candidates:
        try:
            key.verify(signature, signed)
            break
        except InvalidSignature:
            continue
    else:
        raise PolicyError("the policy is refused: Signature verification failed")
    claims = _json_object(_base64url(payload_part, "payload"), "payload")
    for name in ("exp", "iat", "aud", "iss"):
        if name not in claims:
            raise PolicyError(f'the policy is refused: Token is missing the "{name}" claim')
    audience = claims["aud"]
    if audience != enrollment.gateway_id:  # the server writes one string, the gateway's id
        raise PolicyError(f"the policy is refused: its audience {audience!r} is not this "
                          f"gateway ({enrollment.gateway_id})")
    # Expiry against the caller's clock (tests pass one; the agent passes time.time()); iat is
    # not checked against it because the server's clock may run ahead.
    now = time.time() if now is None else now
    if type(claims["exp"]) is not int or claims["exp"] <= now:
        raise PolicyError(f"the policy is refused: it expired (exp {claims.get('exp')!r})")
    try:
        return parse_claims(claims, previous)
    except UnsupportedFormat as err:
        raise PolicyError(f"the policy is refused: {err}") from None
    except ValueError as err:
        raise PolicyError(f"the policy is malformed: {err}") from None


class PolicyStore:
    """The last valid policy JWS in the state dir, written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / POLICY_FILE

    def save(self, token: str) -> None:
        """Keep `token` (already verified) as the last valid policy."""
        atomic_write(self.path, token.encode("ascii"))

    def load(self) -> str | None:
        """The stored JWS, or None when there is none."""
        try:
            return self.path.read_text("ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            log.warning("stored policy %s is unreadable: %s", self.path, err)
            return None


# --- talking to the server -------------------------------------------------------------------

@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


def http_request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> Response:
    """One HTTP request with urllib; ServerError when the server cannot be reached."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json")
    req.add_header("User-Agent", "lesfocus-agent")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            body = answer.read(MAX_ANSWER_BYTES + 1)
            if len(body) > MAX_ANSWER_BYTES:
                raise ServerError(f"{method} {url}: the answer is larger than the documented "
                                  f"maximum of {MAX_ANSWER_BYTES} bytes (lesfocus_policy."
                                  "MAX_ANSWER_BYTES); not read")
            return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()},
                            body)
    except urllib.error.HTTPError as err:
        return Response(err.code, {k.lower(): v for k, v in err.headers.items()},
                        err.read(1 << 16))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ServerError(f"{method} {url}: {getattr(err, 'reason', err)}") from None


# The longest Retry-After the agent honours: a server that asks for more is retried after this.
MAX_RETRY_AFTER_SECONDS = 300


def retry_after(response: Response) -> float | None:
    """The seconds a 429 or 503 answer asks the agent to wait (Retry-After in seconds, RFC 9110
    §10.2.3), at most MAX_RETRY_AFTER_SECONDS; None when it asks nothing readable."""
    if response.status not in (429, 503):
        return None
    raw = response.headers.get("retry-after", "").strip()
    if not raw.isdigit():
        return None  # the HTTP-date form is not used by lesfocus; the usual back-off applies
    return float(min(int(raw), MAX_RETRY_AFTER_SECONDS))


def _error_text(response: Response) -> str:
    try:
        data = json.loads(response.body)
        return f"{response.status} {data.get('error')}: {data.get('message')}"
    except (ValueError, AttributeError):
        return f"{response.status}"


def enroll(server_url: str, token: str, state_dir: Path,
           request: Callable[..., Response] = http_request) -> Enrollment:
    """Make (or reuse) the key pair, enrol with the one-time `token`, pin the server's keys."""
    if not server_url.startswith(("http://", "https://")):
        raise ConfigError(f"--server {server_url!r}: not an http(s) URL")
    if not token.strip():
        raise ConfigError("--token is empty")
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise ConfigError(f"cannot create the state directory {state_dir}: {err}") from None
    key = load_or_create_agent_key(state_dir)
    server_url = server_url.rstrip("/")
    response = request("POST", f"{server_url}/api/v1/gateways/enroll",
                       {"token": token.strip(), "public_key": public_jwk(key.public_key())})
    if response.status != 200 and response.status != 201:
        raise ServerError(f"enrolment refused: {_error_text(response)}")
    try:
        answer = json.loads(response.body)
    except ValueError:
        raise ServerError("enrolment answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ServerError("enrolment answer is not a JSON object")
    enrollment = parse_enrollment({"server_url": server_url, "gateway_id": answer.get("gateway_id"),
                                   "server_keys": answer.get("server_keys")}, "enrolment answer")
    atomic_write(state_dir / ENROLLMENT_FILE, json.dumps({
        "server_url": enrollment.server_url, "gateway_id": enrollment.gateway_id,
        "server_keys": list(enrollment.server_keys)}, indent=2).encode())
    return enrollment


class ServerClient:
    """Signed requests of one enrolled agent to its server."""

    def __init__(self, enrollment: Enrollment, key: Ed25519PrivateKey,
                 request: Callable[..., Response] = http_request) -> None:
        self.enrollment = enrollment
        self.key = key
        self.request = request

    def agent_token(self, now: float | None = None) -> str:
        """A short-lived JWT: EdDSA, sub = gateway id, aud = the server URL."""
        issued = int(time.time() if now is None else now)
        return jwt.encode({"sub": self.enrollment.gateway_id, "aud": self.enrollment.server_url,
                           "iat": issued, "exp": issued + AGENT_TOKEN_SECONDS,
                           "jti": uuid.uuid4().hex}, self.key, algorithm="EdDSA")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agent_token()}"}

    def fetch_policy(self, version: str | None, wait: int) -> tuple[str, str] | None:
        """Long-poll the policy: (version, JWS) when it changed, None when unchanged (304)."""
        headers = self._headers()
        if version:
            headers["If-None-Match"] = f'"{version}"'
        response = self.request("GET", f"{self.enrollment.server_url}/api/v1/gateways/self/policy"
                                f"?wait={wait}&format={FORMAT.split('.')[0]}", headers=headers, timeout=wait + 15)
        if response.status == 304:
            return None
        if response.status != 200:
            raise ServerError(f"policy request answered {_error_text(response)}",
                              retry_after=retry_after(response))
        try:
            data = json.loads(response.body)
        except ValueError:
            raise ServerError("the policy answer is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("policy"), str):
            raise ServerError("the policy answer has no `policy` string")
        return str(data.get("version") or ""), data["policy"]

    def heartbeat(self, payload: dict[str, Any]) -> None:
        """Send one heartbeat; ServerError when it was not accepted."""
        response = self.request("POST", f"{self.enrollment.server_url}/api/v1/gateways/self/"
                                "heartbeat", payload, headers=self._headers())
        if response.status >= 300:
            raise ServerError(f"heartbeat answered {_error_text(response)}",
                              retry_after=retry_after(response))


class PolicySource:
    """The policy in force: reloaded from disk at start, replaced only by a newer valid one."""

    def __init__(self, state_dir: Path, enrollment: Enrollment,
                 client: ServerClient | None = None, clock: Callable[[], float] = time.time,
                 poll_wait: int = 55, max_backoff: float = 60.0) -> None:
        self.store = PolicyStore(state_dir)
        self.max_backoff = max_backoff
        self.enrollment = enrollment
        self.client = client
        self.clock = clock
        self.poll_wait = poll_wait
        self.policy: Policy | None = None
        self.last_error: str | None = None
        self.last_contact: float | None = None
        self.last_verify_seconds = 0.0  # how long the last accepted policy took to verify

    def load_stored(self) -> Policy | None:
        """Reload the last valid policy from disk (verified again); None when there is none."""
        token = self.store.load()
        if token is None:
            return None
        try:
            self.policy = verify_policy(token, self.enrollment, now=self.clock())
        except PolicyError as err:
            log.warning("stored policy not used: %s", err)
            return None
        log.info("reloaded policy %s from %s", self.policy.version, self.store.path)
        return self.policy

    def accept(self, token: str) -> Policy:
        """Verify `token`; when valid and not older than the policy in force, keep and store it."""
        started = time.perf_counter()
        policy = verify_policy(token, self.enrollment, now=self.clock(), previous=self.policy)
        self.last_verify_seconds = time.perf_counter() - started
        if self.policy is not None and policy.issued_at < self.policy.issued_at:
            raise PolicyError(f"the policy {policy.version} was issued before the one in force "
                              f"({policy.issued_at:%Y-%m-%dT%H:%M:%SZ}): replay refused")
        self.store.save(token)
        self.policy = policy
        return policy

    def poll_once(self) -> Policy | None:
        """One long poll; the new policy when one was accepted, None when nothing changed."""
        if self.client is None:
            raise ServerError("no server client")
        current = self.policy.version if self.policy else None
        answer = self.client.fetch_policy(current, self.poll_wait)
        self.last_contact = self.clock()
        if answer is None:
            return None
        version, token = answer
        if current is not None and version == current:
            return None
        return self.accept(token)

    def run(self, on_policy: Callable[[Policy], None], stop: threading.Event,
            initial_backoff: float = 1.0, max_backoff: float | None = None) -> None:
        """Long-poll until `stop`; hand every accepted policy to `on_policy`; back off on errors."""
        max_backoff = self.max_backoff if max_backoff is None else max_backoff
        backoff = min(initial_backoff, max_backoff)
        while not stop.is_set():
            try:
                policy = self.poll_once()
            except (ServerError, PolicyError) as err:
                self.last_error = str(err)
                # Full jitter (AWS architecture blog): hundreds of gateways must not retry in step.
                delay = random.uniform(backoff / 2, backoff)
                # A busy server's Retry-After (it spreads its own values) is a lower bound.
                wanted = getattr(err, "retry_after", None)
                if wanted is not None:
                    delay = max(delay, wanted)
                log.warning("%s; keeping policy %s, retrying in %.1f s", err,
                            self.policy.version if self.policy else "(none)", delay)
                backoff = min(backoff * 2, max_backoff)
                stop.wait(delay)
                continue
            backoff = initial_backoff
            self.last_error = None
            if policy is not None:
                on_policy(policy)

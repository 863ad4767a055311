"""OpenID Providers for the sign-in tests, both on 127.0.0.1.

`RealProvider`: panva's certified `oidc-provider` (npm) in tests/support/oidc/provider.mjs, with
its dev interactions ("any login"). `dev_sign_in` walks its login and consent forms over HTTP as
a browser would. Each start makes a new signing key, so `restart()` is a key rotation.

`ForgingProvider`: a small Python provider whose discovery, JWKS and token endpoint the test
controls, for ID tokens no certified provider would issue (another audience, expired, another
nonce, an unpublished key). Its token endpoint checks the PKCE verifier against the challenge.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "lesfocus-test"
CLIENT_SECRET = "test-client-secret-0123456789abcdef"


def require_node_provider() -> str:
    """The node binary, or skip when `make node-deps` has not installed oidc-provider."""
    node = shutil.which("node")
    if node is None or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("oidc-provider is not installed (make node-deps)")
    return node


class RealProvider:
    """oidc-provider on 127.0.0.1, with one confidential client."""

    def __init__(self, redirect_uris: list[str], post_logout_uris: list[str],
                 port: int = 0) -> None:
        self.node = require_node_provider()
        self.redirect_uris = redirect_uris
        self.post_logout_uris = post_logout_uris
        self.port = port
        self.process: subprocess.Popen[str] | None = None
        self.issuer = ""
        self.kid = ""

    def start(self) -> RealProvider:
        env = dict(os.environ, OIDC_PORT=str(self.port), OIDC_CLIENTS=json.dumps([{
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_uris}]))
        self.process = subprocess.Popen([self.node, str(OIDC_DIR / "provider.mjs")],
                                        cwd=OIDC_DIR, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until it listens (or exits)
        if not line:
            self.process.wait(timeout=30)
            self.process.stdout.close()
            raise RuntimeError(f"oidc-provider did not start (exit {self.process.returncode})")
        info = json.loads(line)
        self.issuer, self.kid = info["issuer"], info["kid"]
        self.port = int(urlsplit(self.issuer).port or 0)
        return self

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=30)
            if self.process.stdout is not None:
                self.process.stdout.close()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port: a new signing key (kid)."""
        self.stop()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.start()
                return
            except (RuntimeError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the port is not free yet


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
_INPUT = re.compile(r"<input[^>]*>")
_ATTRIBUTE = re.compile(r'\b(name|value)="([^"]*)"')


def dev_sign_in(authorization_url: str, login: str, callback_prefix: str,
                browser: requests.Session | None = None) -> str:
    """Sign in as `login` at oidc-provider's dev interactions, starting at the authorization
    URL; the callback URL the provider sends the browser back to (not followed)."""
    browser = browser or requests.Session()
    url, method, data = authorization_url, "GET", None
    for _ in range(12):
        response = browser.request(method, url, data=data, allow_redirects=False, timeout=30)
        if response.is_redirect:
            url = urljoin(url, response.headers["Location"])
            if url.startswith(callback_prefix):
                return url
            method, data = "GET", None
            continue
        assert response.status_code == 200, (response.status_code, response.text[:500])
        form = _FORM.search(response.text)
        assert form, response.text[:500]
        fields = {}
        for tag in _INPUT.findall(form[2]):
            attributes = dict(_ATTRIBUTE.findall(tag))
            if "name" in attributes:
                fields[attributes["name"]] = html.unescape(attributes.get("value", ""))
        if "login" in fields:
            fields.update(login=login, password="any password")
        url, method, data = urljoin(url, html.unescape(form[1])), "POST", fields
    raise AssertionError("the provider never sent the browser back")


_KEYS: dict[str, RSAKey] = {}


def rsa_key(kid: str) -> RSAKey:
    """An RSA key with `kid`, made once per process (making one takes a while)."""
    if kid not in _KEYS:
        _KEYS[kid] = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256",
                                                           "use": "sig"})
    return _KEYS[kid]


@dataclass
class ForgingProvider:
    """A provider whose answers the test writes; `id_token_claims` and `signing_key` shape the
    next ID token (the claims are merged over valid ones: the nonce of the last /auth)."""

    published: list[RSAKey] = field(default_factory=lambda: [rsa_key("forge-1")])
    signing_key: RSAKey | None = None
    header: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    # code -> (PKCE challenge, nonce) of each /auth request
    challenges: dict[str, tuple[str, str]] = field(default_factory=dict)
    jwks_fetches: int = 0
    userinfo: dict[str, Any] = field(default_factory=lambda: {"sub": "s-1"})
    issuer: str = ""
    server: ThreadingHTTPServer | None = None

    def start(self) -> ForgingProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                if path == "/.well-known/openid-configuration":
                    self._json(200, provider.discovery())
                elif path == "/userinfo":
                    if self.headers.get("Authorization") != "Bearer opaque":
                        self._json(401, {"error": "invalid_token"})
                    else:
                        self._json(200, provider.userinfo)
                elif path == "/jwks":
                    provider.jwks_fetches += 1
                    self._json(200, KeySet(provider.published).as_dict(private=False))
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                expected = "Basic " + base64.b64encode(
                    f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self._json(401, {"error": "invalid_client"})
                    return
                challenge, nonce = provider.challenges.pop(form.get("code", ""), ("", ""))
                verifier = form.get("code_verifier", "")
                if not challenge or _s256(verifier) != challenge:
                    self._json(400, {"error": "invalid_grant"})
                    return
                self._json(200, {"access_token": "opaque", "token_type": "Bearer",
                                 "expires_in": 300, "id_token": provider.id_token(nonce)})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": self.issuer + "/auth",
                "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
                "userinfo_endpoint": self.issuer + "/userinfo",
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"]}

    def authorize(self, authorization_url: str, code: str = "code-1") -> str:
        """What /auth would answer: the callback query (code, state) for the request URL."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()}
        assert query["code_challenge_method"] == "S256"
        assert query["client_id"] == CLIENT_ID and "openid" in query["scope"].split()
        self.challenges[code] = (query["code_challenge"], query["nonce"])
        return f"code={code}&state={query['state']}"

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "sub": "s-1", "iat": now,
                  "exp": now + 300, "nonce": nonce, "email": "docent@school.test",
                  "email_verified": True, **self.overrides}
        claims = {k: v for k, v in claims.items() if v is not None}
        key = self.signing_key or self.published[0]
        header = {"alg": "RS256", "kid": key.kid, **self.header}
        return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")

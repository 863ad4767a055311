"""The extension tests' harness: a loopback HTTPS server that plays every social site and the
lesfocus server, and Debian's Chromium with the extension loaded."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSION_DIR = ROOT / "extension"
FIXTURES = ROOT / "tests" / "extension" / "fixtures"
CHROMIUM = "/usr/bin/chromium"
EXTENSION_ID = "gakiipjkpedkfbmonjbfkdjfigbnpnbj"
SERVER_HOST = "lesfocus.test"

# Host names of each platform, mapped to its fixture page.
SITE_HOSTS: dict[str, list[str]] = {
    "x": ["x.com", "twitter.com"],
    "facebook": ["www.facebook.com"],
    "instagram": ["www.instagram.com"],
    "youtube": ["www.youtube.com"],
    "linkedin": ["www.linkedin.com"],
    "whatsapp": ["web.whatsapp.com"],
    "tiktok": ["www.tiktok.com"],
    "snapchat": ["web.snapchat.com"],
}
HOST_TO_SITE = {host: site for site, hosts in SITE_HOSTS.items() for host in hosts}

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--ignore-certificate-errors",
]


from tests.support.realparts import require  # noqa: E402  (re-exported for the extension tests)


@dataclass
class LoggedRequest:
    """One request the fake internet received."""

    host: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeInternet:
    """State of the local HTTPS server: what it answers and every request it saw."""

    port: int = 0
    requests: list[LoggedRequest] = field(default_factory=list)
    reminders: list[dict[str, Any]] | None = None
    reminders_etag: str = '"v1"'
    lesson_status: dict[str, Any] = field(
        default_factory=lambda: {
            "in_lesson": False,
            "blocked_services": [],
            "until": None,
            "exception": None,
        }
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, site: str, path: str = "/", host: str | None = None) -> str:
        """The https URL of a platform's fixture, under its real host name."""
        return f"https://{host or SITE_HOSTS[site][0]}{path}"

    def api_requests(self, path_prefix: str) -> list[LoggedRequest]:
        """The requests the lesfocus server received under a path."""
        with self.lock:
            return [
                r for r in self.requests if r.host == SERVER_HOST and r.path.startswith(path_prefix)
            ]


def _handler(state: FakeInternet) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(
            self, format: str, *args: Any
        ) -> None:  # noqa: A002 - signature of the base class
            """Keep the test output quiet."""

        def _record(self) -> LoggedRequest:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            host = (self.headers.get("Host") or "").split(":")[0]
            entry = LoggedRequest(host, self.command, self.path, dict(self.headers.items()), body)
            with state.lock:
                state.requests.append(entry)
            return entry

        def _send(
            self,
            status: int,
            body: bytes = b"",
            ctype: str = "text/plain",
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
            """CORS preflight for the lesfocus API (the extension sends If-None-Match)."""
            self._record()
            self._send(
                204,
                headers={
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Methods": "GET, OPTIONS",
                    "Access-Control-Allow-Headers": "If-None-Match",
                    "Access-Control-Max-Age": "600",
                },
            )

        def do_POST(self) -> None:  # noqa: N802
            """Nothing on the fake internet accepts posts; they are only logged."""
            self._record()
            self._send(404)

        def do_GET(self) -> None:  # noqa: N802
            """Fixture pages for the platforms, the API for the lesfocus host."""
            entry = self._record()
            path = entry.path.split("?")[0]
            if entry.host == SERVER_HOST:
                self._api(entry, path)
            elif path == "/__fixture/common.js":
                self._send(200, (FIXTURES / "common.js").read_bytes(), "text/javascript")
            elif entry.host in HOST_TO_SITE and path in ("/", "/bench", "/web"):
                name = (
                    "bench_timeline.html"
                    if path == "/bench"
                    else f"{HOST_TO_SITE[entry.host]}.html"
                )
                self._send(200, (FIXTURES / name).read_bytes(), "text/html; charset=utf-8")
            else:
                self._send(404)

        def _api(self, entry: LoggedRequest, path: str) -> None:
            cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag"}
            if path == "/api/v1/reminders" and state.reminders is not None:
                if entry.headers.get("If-None-Match") == state.reminders_etag:
                    self._send(304, headers={**cors, "ETag": state.reminders_etag})
                    return
                body = json.dumps({"reminders": state.reminders}).encode()
                self._send(200, body, "application/json", {**cors, "ETag": state.reminders_etag})
            elif path == "/api/v1/lesson-status":
                self._send(200, json.dumps(state.lesson_status).encode(), "application/json", cors)
            else:
                self._send(
                    404,
                    b'{"error": "Not Found", "message": "no such fake endpoint"}',
                    "application/json",
                    cors,
                )

    return Handler


def chromium_available() -> bool:
    """True when Debian's Chromium and Playwright are installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


def launch_chromium(
    playwright: Any, profile: Path, port: int, lang: str = "nl", with_extension: bool = True
) -> Any:
    """Chromium with the extension loaded and every host name resolved to the fake internet."""
    args = [
        *CHROMIUM_ARGS,
        f"--lang={lang}",
        f"--host-resolver-rules=MAP * 127.0.0.1:{port}, EXCLUDE localhost",
    ]
    if with_extension:
        args += [
            f"--disable-extensions-except={EXTENSION_DIR}",
            f"--load-extension={EXTENSION_DIR}",
        ]
    # On Linux Chromium takes its interface language (and so the extension's _locales choice)
    # from LANGUAGE, not from --lang; both are set. The locales need Debian's chromium-l10n.
    env = {**os.environ, "LANGUAGE": lang, "LC_ALL": "C.UTF-8"}
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=args,
        env=env,
        locale="nl-NL" if lang == "nl" else "en-US",
        ignore_https_errors=True,
        viewport={"width": 1200, "height": 900},
    )


def extension_worker(context: Any, timeout: float = 10.0) -> Any:
    """The extension's service worker in this context."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in context.service_workers:
            if worker.url.startswith(f"chrome-extension://{EXTENSION_ID}/"):
                return worker
        try:
            context.wait_for_event("serviceworker", timeout=1000)
        except (
            Exception
        ):  # noqa: BLE001 - playwright's TimeoutError; keep polling until the deadline
            pass
    raise AssertionError(f"the extension's service worker ({EXTENSION_ID}) did not start")


def set_options(context: Any, **options: Any) -> None:
    """Store options as the options page would (storage.local "options"), and clear caches."""
    worker = extension_worker(context)
    worker.evaluate(
        """async (options) => {
        const all = await chrome.storage.local.get(null);
        await chrome.storage.local.remove(Object.keys(all));
        await chrome.storage.local.set({options});
    }""",
        options,
    )


def start_fake_internet(certdir: Path) -> tuple[FakeInternet, ThreadingHTTPServer]:
    """Start a loopback HTTPS server (self-signed certificate) that answers for every host name."""
    require(shutil.which("openssl") is not None, "openssl")
    cert, key = certdir / "cert.pem", certdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lesfocus-fixtures",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    state = FakeInternet()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="fake-internet", daemon=True)
    thread.start()
    return state, server

"""`lesfocus serve` in a child process: the serving code users get (server/serving.py, gunicorn).

End-to-end and browser tests talk to this, not to a second server of their own. The child runs
in the host's network namespace or, given a `Netns`, inside it (`ip netns exec`), on an
ephemeral port that it prints once bound; `start` returns when the app answers a request.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tests.support.processes import stop_process

def free_port(host: str) -> int:
    """A TCP port free on `host` right now (the server binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


LISTENING = re.compile(r"lesfocus: serving on (http://\S+?)/?$")


class ServedApp:
    """One `lesfocus serve` process with the given LESFOCUS_* settings; its log in `log_path`."""

    def __init__(self, settings: dict[str, str], log_path: Path, host: str = "127.0.0.1",
                 ns: Any = None, connections: int = 2000) -> None:
        self.settings = settings
        self.log_path = log_path
        self.host = host
        self.ns = ns
        self.connections = connections
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def _entered(self) -> Any:
        return self.ns.entered() if self.ns is not None else nullcontext()

    def start(self, port: int | None = None, timeout: float = 60.0) -> "ServedApp":
        """Start serving (on `port`, or the last one, or a free one) and wait until it answers."""
        lesfocus = Path(sys.executable).with_name("lesfocus")
        port = self.port if port is None else port
        env = {**os.environ, **self.settings, "PYTHONUNBUFFERED": "1"}
        if not env.get("LESFOCUS_PUBLIC_URL"):
            # `lesfocus serve` needs the URL agents address their tokens to (issue 13, item 7):
            # the one it serves on, so its port is chosen here rather than by the server.
            if not port:
                with self._entered():
                    port = free_port(self.host)
            host = f"[{self.host}]" if ":" in self.host else self.host
            env["LESFOCUS_PUBLIC_URL"] = f"http://{host}:{port}"
        command = [str(lesfocus), "serve", "--host", self.host, "--port", str(port),
                   "--connections", str(self.connections)]
        if self.ns is not None:
            command = ["ip", "netns", "exec", self.ns.name, *command]
        self.log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        try:
            self.url = self._listening_url(timeout)
            self.port = int(self.url.rsplit(":", 1)[1])
            self._wait_until_it_answers(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _listening_url(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=0.5):
                    if self.proc.poll() is not None:
                        break
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                found = LISTENING.search(line.strip())
                if found:
                    return found.group(1)
        raise AssertionError(f"lesfocus serve did not start listening; its log: "
                             f"{self.log_path.read_text()[-3000:]}")

    def _wait_until_it_answers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._entered():
                    with urllib.request.urlopen(self.url + "/api/v1/keys", timeout=5) as answer:
                        if answer.status == 200:
                            return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise AssertionError(f"lesfocus serve did not answer; its log: "
                                     f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """End the server at once (gunicorn's quick shutdown, SIGINT), as a crash or restart would."""
        if self.proc is None:
            return
        stop_process(self.proc, signal.SIGINT, timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        self.log.close()

"""`lesfocus worker` in a child process, its log in a file, and waits for what it logs.

Tests wait for states the worker logs ("worker active", "job retention ran"), each with a generous
bound, never for a fixed time: the machine may be busy.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import stop_process


class WorkerProcess:
    """One `lesfocus worker` with the given LESFOCUS_* settings; its log in `log_path`."""

    def __init__(self, settings: dict[str, str], log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "WorkerProcess":
        """Start the worker (it logs to `log_path`); returns at once."""
        lesfocus = Path(sys.executable).with_name("lesfocus")
        env = {**os.environ, **self.settings, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(lesfocus), "worker"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def log(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") \
            if self.log_path.exists() else ""

    def logged(self, pattern: str, after: int = 0) -> bool:
        """True when the log (from character `after` on) has a line matching `pattern`."""
        return re.search(pattern, self.log[after:], re.MULTILINE) is not None

    def wait_for(self, pattern: str, timeout: float = 45.0, after: int = 0) -> None:
        """Wait until the worker logs `pattern` (from character `after` on)."""
        deadline = time.monotonic() + timeout
        while not self.logged(pattern, after):
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the worker exited ({self.proc.returncode}) before logging "
                                     f"{pattern!r}; its log:\n{self.log[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not log {pattern!r} within {timeout} s; "
                                     f"its log:\n{self.log[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the worker dies as in a crash, without releasing anything itself."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """End the worker as systemd does (SIGTERM, then SIGKILL); its exit code."""
        if self.proc is None:
            return None
        code, self.proc = stop_process(self.proc, signal.SIGTERM, timeout), None
        return code

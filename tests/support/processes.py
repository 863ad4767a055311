"""Ending the child processes that tests start (servers, nginx, workers, agents)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 timeout: float = 15.0) -> int:
    """Send `sig` unless it ended already, wait up to `timeout`, else kill it; reap it and return
    its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode

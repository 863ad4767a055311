"""The few named errors the agent's boundary turns builtin exceptions into.

`main()` prints each once (to stderr, without a traceback) and exits with its code, in the manner
of click's exceptions that know their exit code.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's named errors; `exit_code` is what `main()` exits with."""

    exit_code = 1

    def show(self) -> str:
        """The one line `main()` prints."""
        return f"lesfocus-agent: {type(self).__name__}: {self}"


class ConfigError(AgentError):
    """Bad command line, state directory, or enrolment data."""

    exit_code = 2


class PolicyError(AgentError):
    """A refused policy: bad signature, expired, malformed, or for another gateway."""

    exit_code = 3


class NotRunningError(AgentError):
    """`status`: the agent has written no status lately (stopped, never started, or stuck)."""

    exit_code = 6


class EnforcerError(AgentError):
    """The kernel refused the enforcer's transaction, or the backend cannot start."""

    exit_code = 4


class ServerError(AgentError):
    """The server could not be reached or answered something unusable.

    `retry_after`: the seconds the server asked the agent to wait (Retry-After on a 429 or 503),
    or None."""

    exit_code = 5

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

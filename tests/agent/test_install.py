"""The agent's install: its modules and the shared policy package need none of the server's."""

from __future__ import annotations

import subprocess
import sys


def _printed(code: str) -> str:
    """What `code` prints in a fresh interpreter (nothing imported before it)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()


def test_the_agent_and_lesfocus_policy_import_nothing_of_the_server() -> None:
    pulled = _printed(
        "import sys, agent.cli, agent.runner, agent.policy_source, agent.enforcers.nftables, "
        "lesfocus_policy; print(' '.join(m for m in ('flask', 'sqlalchemy', 'server', "
        "'flask_sqlalchemy') if m in sys.modules))")
    assert pulled == "", f"the agent pulls in: {pulled}"


def test_lesfocus_policy_needs_only_the_standard_library() -> None:
    pulled = _printed(
        "import sys; before = set(sys.modules); import lesfocus_policy; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(' '.join(sorted(m for m in new if m not in sys.stdlib_module_names "
        "and m != 'lesfocus_policy')))")
    assert pulled == "", f"lesfocus_policy imports: {pulled}"

"""The agent's install: its modules and the shared policy package need none of the server's."""

from __future__ import annotations

import subprocess
import sys


def test_the_agent_and_lesfocus_policy_import_nothing_of_the_server() -> None:
    code = ("import sys, agent.cli, agent.runner, agent.policy_source, agent.enforcers.nftables, "
            "lesfocus_policy; "
            "print(' '.join(m for m in ('flask', 'sqlalchemy', 'server', 'flask_sqlalchemy') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "", f"the agent pulls in: {done.stdout.strip()}"


def test_lesfocus_policy_needs_only_the_standard_library() -> None:
    code = ("import sys; before = set(sys.modules); import lesfocus_policy; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(' '.join(sorted(m for m in new if m not in sys.stdlib_module_names "
            "and m != 'lesfocus_policy')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "", f"lesfocus_policy imports: {done.stdout.strip()}"

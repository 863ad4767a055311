"""Real parts a test needs (PostgreSQL, root, Chromium...): skip when absent, fail under `make test`.

A module of its own, not conftest.py: `from conftest import ...` resolves to whichever of the
several conftest.py files pytest imported last.
"""

from __future__ import annotations

import os

import pytest

# `make test` (scripts/run-tests) sets this: every part it promises must be there.
REQUIRE_ALL = os.environ.get("LESFOCUS_TEST_REQUIRE_ALL") == "1"


def require(condition: bool, what: str) -> None:
    """Skip when a real part is missing, or fail when `make test` promised it (CI)."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is missing, but `make test` must provide it")
    pytest.skip(f"{what} is not available")

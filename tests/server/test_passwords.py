"""The password hashes the server ships: Argon2id at RFC 9106's second recommended cost.

The other tests hash at the lowest cost (tests/conftest.py: cheap_password_hashes); this one asks a
process of its own, which has the server's hasher as shipped.
"""

from __future__ import annotations

import subprocess
import sys

from argon2.profiles import RFC_9106_LOW_MEMORY

PROBE = """
from server.passwords import hash_password, verify_password
stored = hash_password("a long enough password")
assert verify_password(stored, "a long enough password")
assert not verify_password(stored, "another long password")
assert not verify_password(None, "a long enough password")
print(stored)
"""


def test_hashes_are_argon2id_at_rfc_9106s_second_choice() -> None:
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stderr
    profile = RFC_9106_LOW_MEMORY
    assert probe.stdout.startswith(f"$argon2id$v=19$m={profile.memory_cost},"
                                   f"t={profile.time_cost},p={profile.parallelism}$")

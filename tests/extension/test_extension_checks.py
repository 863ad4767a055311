"""The local checks' unit tables (checks.test.js) run under `node --test`, from pytest, so that
`make test` runs them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.extension import require

HERE = Path(__file__).resolve().parent


def test_node_unit_tests_of_the_local_checks_pass() -> None:
    node = shutil.which("node")
    require(node is not None, "Node.js (node)")
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(HERE / "checks.test.js")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    failing = [line for line in output.splitlines() if line.startswith("not ok")]
    assert result.returncode == 0 and not failing, output[-4000:]
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 50, output[-2000:]


def test_node_unit_tests_of_the_configuration_pass() -> None:
    node = shutil.which("node")
    require(node is not None, "Node.js (node)")
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(HERE / "config.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "# fail 0" in output, output[-4000:]
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 4, output[-2000:]

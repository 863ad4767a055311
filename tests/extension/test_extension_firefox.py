"""Firefox smoke test: the same extension directory loads in Debian's firefox-esr (headless,
WebDriver BiDi via puppeteer-core) and intercepts a post on the X fixture."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.support.extension import EXTENSION_DIR, FakeInternet, require

pytestmark = [pytest.mark.firefox, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


def test_firefox_loads_the_extension_and_intercepts_a_post(fake_internet: FakeInternet) -> None:
    node = shutil.which("node")
    require(
        node is not None and shutil.which("firefox-esr") is not None,
        "node and Debian's firefox-esr",
    )
    require(
        (HERE / "node_modules" / "puppeteer-core").is_dir(),
        "puppeteer-core (npm install --prefix tests/extension)",
    )
    result = subprocess.run(
        [node, str(HERE / "firefox_smoke.mjs"), str(EXTENSION_DIR), str(fake_internet.port)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=HERE,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert (
        lines
    ), f"no result from the Firefox run:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    seen = json.loads(lines[-1])
    assert "error" not in seen, seen.get("error")
    assert seen["installed"] == "lesfocus@lesfocus.invalid"
    assert seen["overlay"] is True
    assert seen["articles"] == ["A1", "A2", "A3"]
    assert seen["sentAfterEdit"] == 0
    assert seen["sentAfterPost"] == 1

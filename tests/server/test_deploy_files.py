"""The deployment files shipped in docs/ (systemd units of the server) say what the server runs."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"lesfocus-serve@.service": "serve", "lesfocus-worker.service": "worker"}


def _settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("name, command", sorted(UNITS.items()))
def test_the_server_units_run_a_real_command_unprivileged_with_one_instance_folder(
        name: str, command: str) -> None:
    from server.app import create_app
    settings = _settings((ROOT / "docs" / "systemd" / name).read_text())
    assert settings["User"] == ["lesfocus"] and settings["CapabilityBoundingSet"] == [""]
    assert settings["NoNewPrivileges"] == ["yes"] and settings["ProtectSystem"] == ["strict"]
    # Every process of a deployment signs with the same key: the same absolute folder.
    # And one metrics folder per host, emptied at boot (docs/deploy-server.md, "Metrics").
    assert settings["Environment"] == ["LESFOCUS_INSTANCE_PATH=/var/lib/lesfocus",
                                       "PROMETHEUS_MULTIPROC_DIR=/run/lesfocus-metrics"]
    assert settings["RuntimeDirectory"] == ["lesfocus-metrics"]
    assert settings["RuntimeDirectoryPreserve"] == ["yes"]
    assert settings["StateDirectory"] == ["lesfocus"]
    argv = shlex.split(settings["ExecStart"][0].replace("%i", "8001"))
    assert argv[0] == "/opt/lesfocus/.venv/bin/lesfocus" and argv[1] == command
    # The options the unit passes are options of the command (its --help lists them).
    app = create_app({"INSTANCE_PATH": "/tmp/lesfocus-unit-test", "SECRET_KEY": "x"})
    help_text = CliRunner().invoke(app.cli, [command, "--help"]).output
    for option in (a for a in argv[2:] if a.startswith("--")):
        assert option in help_text, (name, option)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_accepts_the_server_units(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # Only the binary's path is changed, to one that exists here.
    text = (ROOT / "docs" / "systemd" / name).read_text().replace(
        "/opt/lesfocus/.venv/bin/lesfocus", shutil.which("true") or "/bin/true")
    unit = tmp_path / name.replace("@.", "@8001.")
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if str(unit.name) in line or "error" in line.lower()]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr

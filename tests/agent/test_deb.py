"""`make agent-deb`: the package installs, upgrades and is removed and purged by dpkg, and the
installed agent runs `--help` and `status`.

Isolated root: an overlay of this machine's own root (its dpkg database, python3, nftables...)
with a scratch upper layer, mounted in a private mount namespace (`unshare --mount`, with a
network namespace of its own) and entered with chroot. Everything dpkg and the maintainer
scripts write (the package database, /etc/passwd, /opt, /var/lib) lands in the scratch layer;
the host's own database and files are untouched, which the test checks as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.policy_source import ENROLLMENT_FILE, PolicyStore, public_jwk
from tests.agent.test_cli import (GATEWAY, LESSON_NOW, SERVER_KEY, _running_agent_status,
                                  policy_token)

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("0.1.0~t1", "0.1.0~t2")

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two versions of the package, built as `make agent-deb` does (with its wheel cache)."""
    if os.geteuid() != 0 or shutil.which("dpkg-deb") is None:
        pytest.skip("needs root and dpkg-deb")
    out = tmp_path_factory.mktemp("debs")
    first, second = VERSIONS
    env = {**os.environ, "AGENT_DEB_VERSION": first, "AGENT_DEB_OUT": str(out)}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-agent-deb")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout.strip())
    built = {first: next(out.glob(f"lesfocus-agent_{first}_*.deb"))}
    # The next version: the same files under a new version number (a second build would only
    # repeat the first one's work, seconds of the test budget).
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "--raw-extract", str(built[first]), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(f"Version: {first}\n", f"Version: {second}\n"))
    built[second] = out / built[first].name.replace(first, second)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zzstd", "--build", str(tree),
                    str(built[second])], check=True, stdout=subprocess.DEVNULL)
    return built


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # The overlay's work folder holds entries only root may remove; the mount is gone already.
    subprocess.run(["rm", "-rf", str(tmp_path / "work")], check=False)


def _state_dir(into: Path) -> None:
    """An enrolled state directory with a policy blocking now and a running agent's status."""
    into.mkdir(parents=True)
    (into / ENROLLMENT_FILE).write_text(json.dumps({
        "server_url": "http://127.0.0.1:9", "gateway_id": GATEWAY,
        "server_keys": [public_jwk(SERVER_KEY.public_key())]}))
    PolicyStore(into).save(policy_token(LESSON_NOW))
    _running_agent_status(into)


# Runs inside the chroot; each step prints a marker line the test reads.
STEPS = r"""
set -eu
step() { echo "== $*"; }
as_agent() { setpriv --reuid=lesfocus-agent --regid=lesfocus-agent --clear-groups "$@"; }

step install
started=$(date +%s%N)
dpkg -i /pkgs/v1.deb
step install-ms $(( ($(date +%s%N) - started) / 1000000 ))
step version "$(dpkg-query -W -f='${Version}' lesfocus-agent)"
step user "$(getent passwd lesfocus-agent | cut -d: -f1,6,7)"
step state "$(stat -c '%U %G %a' /var/lib/lesfocus-agent)"
step unit "$(grep '^ExecStart=' /lib/systemd/system/lesfocus-agent.service)"
step help
lesfocus-agent --help
cp -a /pkgs/state/. /var/lib/lesfocus-agent/
chown -R lesfocus-agent:lesfocus-agent /var/lib/lesfocus-agent
step status
as_agent lesfocus-agent status --json --state-dir /var/lib/lesfocus-agent > /tmp/status.json
step status-exit 0
echo 'LESFOCUS_AGENT_ARGS="--lan eth1"' > /etc/default/lesfocus-agent

step upgrade
started=$(date +%s%N)
dpkg -i /pkgs/v2.deb
step upgrade-ms $(( ($(date +%s%N) - started) / 1000000 ))
step version "$(dpkg-query -W -f='${Version}' lesfocus-agent)"
step kept-defaults "$(cat /etc/default/lesfocus-agent)"
step kept-state "$(ls /var/lib/lesfocus-agent | tr '\n' ' ')"
as_agent lesfocus-agent status --state-dir /var/lib/lesfocus-agent > /dev/null
step status-after-upgrade 0

step remove
nft add table inet lesfocus  # as a stopped agent leaves it
dpkg -r lesfocus-agent
step table "$(nft list table inet lesfocus >/dev/null 2>&1 && echo kept || echo gone)"
step binary "$(ls /usr/bin/lesfocus-agent 2>/dev/null || echo gone)"
step lib "$(ls /opt/lesfocus-agent 2>/dev/null | tr '\n' ' ' || true)"
step state-after-remove "$(ls /var/lib/lesfocus-agent | tr '\n' ' ')"
step user-after-remove "$(getent passwd lesfocus-agent | cut -d: -f1 || true)"

step purge
dpkg -P lesfocus-agent
step state-after-purge "$(ls -d /var/lib/lesfocus-agent 2>/dev/null || echo gone)"
step user-after-purge "$(getent passwd lesfocus-agent || echo gone)"
step listed "$(dpkg-query -W -f='${Status}' lesfocus-agent 2>/dev/null || echo none)"
step done
"""


def _markers(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line.startswith("== "):
            name, _, value = line[3:].partition(" ")
            found[name] = value
    return found


def test_install_upgrade_remove_and_purge_in_an_isolated_root(packages: dict[str, Path],
                                                               scratch: Path) -> None:
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "root"
    for folder in (upper, work, merged):
        folder.mkdir()
    (upper / "pkgs").mkdir()
    shutil.copy(packages[VERSIONS[0]], upper / "pkgs" / "v1.deb")
    shutil.copy(packages[VERSIONS[1]], upper / "pkgs" / "v2.deb")
    _state_dir(upper / "pkgs" / "state")
    (upper / "pkgs" / "steps.sh").write_text(STEPS)
    host_status = Path("/var/lib/dpkg/status").read_bytes()
    command = (f"mount --make-rprivate / && mount -t overlay overlay -o lowerdir=/,"
               f"upperdir={upper},workdir={work} {merged} && "
               f"chroot {merged} /bin/sh /pkgs/steps.sh")
    # --net: prerm's `nft delete table inet lesfocus` meets an empty namespace of its own, not
    # the tables of this machine (or of tests running beside this one).
    result = subprocess.run(["unshare", "--mount", "--net", "--fork", "sh", "-c", command],
                            capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    steps = _markers(result.stdout)
    assert "done" in steps, output
    print(f"\ndpkg -i: {steps['install-ms']} ms; upgrade: {steps['upgrade-ms']} ms")
    versions = [line[len("== version "):] for line in result.stdout.splitlines()
                if line.startswith("== version ")]
    assert versions == list(VERSIONS)
    assert steps["user"] == "lesfocus-agent:/var/lib/lesfocus-agent:/usr/sbin/nologin"
    assert steps["state"] == "lesfocus-agent lesfocus-agent 700"
    assert steps["unit"].startswith("ExecStart=/usr/bin/lesfocus-agent run --state-dir "
                                    "/var/lib/lesfocus-agent")
    assert "usage: lesfocus-agent" in result.stdout and "enroll" in result.stdout
    report = json.loads((upper / "tmp" / "status.json").read_text())
    assert report["ok"] is True and report["gateway_id"] == GATEWAY
    assert report["policy"]["valid"] is True
    assert [s["blocked"] != {} for s in report["segments"]] == [True, False]
    assert steps["kept-defaults"] == 'LESFOCUS_AGENT_ARGS="--lan eth1"'
    assert "enrollment.json" in steps["kept-state"]
    assert steps["binary"] == "gone" and steps["lib"] == ""
    assert steps["table"] == "gone"  # removed: nothing is blocked any more
    assert "enrollment.json" in steps["state-after-remove"]  # remove keeps the gateway's identity
    assert steps["user-after-remove"] == "lesfocus-agent"
    assert steps["state-after-purge"] == "gone" and steps["user-after-purge"] == "gone"
    assert steps["listed"] in ("none", "")
    # The host saw none of it.
    assert Path("/var/lib/dpkg/status").read_bytes() == host_status
    assert not Path("/opt/lesfocus-agent").exists()
    assert b"lesfocus-agent" not in Path("/etc/passwd").read_bytes()


def test_the_package_carries_its_dependencies_and_the_scripts(packages: dict[str, Path]) -> None:
    deb = packages[VERSIONS[0]]
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True,
                             text=True, check=True).stdout
    for path in ("./usr/bin/lesfocus-agent", "./lib/systemd/system/lesfocus-agent.service",
                 "./etc/default/lesfocus-agent", "./opt/lesfocus-agent/lib/agent/cli.py",
                 "./opt/lesfocus-agent/lib/lesfocus_policy/", "./opt/lesfocus-agent/lib/scapy/",
                 "./opt/lesfocus-agent/lib/cryptography/", "./opt/lesfocus-agent/lib/jwt/",
                 "./opt/lesfocus-agent/lib/prometheus_client/"):
        assert path in listing, path
    assert "/server/" not in listing
    # Bytecode made at build time: the service may not write its lib (ProtectSystem=strict).
    assert "./opt/lesfocus-agent/lib/agent/__pycache__/cli.cpython-" in listing
    fields = subprocess.run(["dpkg-deb", "--field", str(deb), "Depends", "Version"],
                            capture_output=True, text=True, check=True).stdout
    assert f"Version: {VERSIONS[0]}" in fields
    assert "nftables" in fields and "python3 (>= 3." in fields

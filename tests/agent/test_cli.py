"""`lesfocus-agent` as IT runs it: enroll, run with the dry-run backend, status, and exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cli import main
from agent.policy_source import ENROLLMENT_FILE, PolicyStore, public_jwk

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-test-1"
SERVER_KEY = Ed25519PrivateKey.generate()
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def z(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def policy_token(blocks: list[dict[str, Any]], *, key: Ed25519PrivateKey = SERVER_KEY,
                 exp: datetime | None = None, ver: str = "v1") -> str:
    claims = {"iss": "http://127.0.0.1:9", "aud": GATEWAY, "iat": int(NOW.timestamp()) - 5,
              "exp": int((exp or NOW + timedelta(days=7)).timestamp()), "ver": ver,
              "tz": "Europe/Amsterdam",
              "services": {"tiktok": {"name": "TikTok", "domains": ["tiktok.com"]},
                           "youtube": {"name": "YouTube", "domains": ["youtube.com"]}},
              "segments": [{"id": 7, "name": "lokaal 2.14", "cidrs": ["10.81.1.0/24"],
                            "blocks": blocks},
                           {"id": 8, "name": "lokaal 2.15", "cidrs": ["10.81.2.0/24"],
                            "blocks": []}]}
    return jwt.encode(claims, key, algorithm="EdDSA")


LESSON_NOW = [{"start": z(NOW - timedelta(minutes=10)), "end": z(NOW + timedelta(minutes=40)),
               "services": ["tiktok", "youtube"]}]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An enrolled state dir (server on a closed port) with a policy blocking segment 7 now."""
    state = tmp_path / "state"
    state.mkdir()
    (state / ENROLLMENT_FILE).write_text(json.dumps({
        "server_url": "http://127.0.0.1:9", "gateway_id": GATEWAY,
        "server_keys": [public_jwk(SERVER_KEY.public_key())]}))
    PolicyStore(state).save(policy_token(LESSON_NOW))
    _running_agent_status(state)
    return state


def _running_agent_status(state: Path, written: datetime | None = None) -> Path:
    """status.json as a running agent writes it (at `written`, default now)."""
    path = state / "status.json"
    path.write_text(json.dumps({
        "pid": 4242, "backend": "dry-run", "started_at": z(NOW - timedelta(hours=1)),
        "policy_version": "v1", "applied_at": z(NOW - timedelta(minutes=1)),
        "next_change": z(NOW + timedelta(minutes=40)), "last_contact": z(NOW - timedelta(seconds=30)),
        "last_error": None, "written_at": z(written or datetime.now(timezone.utc))}))
    return path


def test_status_shows_what_is_blocked_per_segment_and_the_policy_age(
        state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    assert f"gateway {GATEWAY}" in out and "policy v1: valid" in out
    assert "segment 7 lokaal 2.14 (10.81.1.0/24): lesson until" in out
    assert "; blocked tiktok until" in out and "youtube until" in out
    assert "segment 8 lokaal 2.15 (10.81.2.0/24): nothing blocked" in out


def test_status_json_is_one_object(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", "--state-dir", str(state_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policy"]["valid"] is True
    assert [sorted(s["blocked"]) for s in report["segments"]] == [["tiktok", "youtube"], []]


# The fields docs/agent.md documents for `status --json`: present in every answer.
STATUS_FIELDS = {"format", "now", "gateway_id", "server", "ok", "problems", "agent", "policy",
                 "next_change", "segments"}
AGENT_FIELDS = {"running", "status_written_at", "status_age_seconds", "pid", "backend",
                "started_at", "policy_version", "applied_at", "last_contact",
                "last_contact_age_seconds", "last_error"}
POLICY_FIELDS = {"valid", "problem", "version", "issued_at", "expires_at", "age_seconds",
                 "expires_in_seconds"}


def _status_json(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = main(["status", "--json", "--state-dir", str(state_dir)])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_status_json_has_the_documented_fields_with_the_agent_and_policy_facts(
        state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = _status_json(state_dir, capsys)
    assert (code, err) == (0, "")
    assert set(report) == STATUS_FIELDS and report["format"] == 1
    assert set(report["agent"]) == AGENT_FIELDS and set(report["policy"]) == POLICY_FIELDS
    assert report["ok"] is True and report["problems"] == []
    agent, policy = report["agent"], report["policy"]
    assert agent["running"] is True and agent["pid"] == 4242 and agent["backend"] == "dry-run"
    assert 0 <= agent["status_age_seconds"] < 30  # the fixture wrote it just now
    # The policy and the last contact are of NOW, when the module was imported (a while ago in
    # a long run): ages counted from the report's own `now`.
    read_at = datetime.fromisoformat(report["now"])

    def since(at: datetime) -> int:
        return int((read_at - at).total_seconds())

    assert agent["last_contact_age_seconds"] == since(NOW - timedelta(seconds=30))
    assert policy["version"] == "v1" and policy["problem"] is None
    assert policy["age_seconds"] == since(NOW - timedelta(seconds=5))
    assert policy["expires_in_seconds"] == -since(NOW + timedelta(days=7))


@pytest.mark.parametrize("case, code, problem", [
    ("no status file", 6, "no status file"),
    ("stale status file", 6, "s old (stopped or stuck?)"),
    ("expired policy", 3, "no valid policy"),
    ("no policy", 3, "no policy stored yet"),
    ("expired policy and no status file", 3, "no valid policy"),
])
def test_status_exit_code_and_json_say_what_monitoring_should_alert_on(
        state_dir: Path, capsys: pytest.CaptureFixture[str], case: str, code: int,
        problem: str) -> None:
    if "no status file" in case:
        (state_dir / "status.json").unlink()
    if case == "stale status file":
        _running_agent_status(state_dir, written=NOW - timedelta(minutes=5))
    if "expired" in case:
        (state_dir / "policy.jws").write_text(
            policy_token(LESSON_NOW, exp=NOW - timedelta(seconds=1)))
    if case == "no policy":
        (state_dir / "policy.jws").unlink()
    got, report, err = _status_json(state_dir, capsys)
    assert got == code, err
    assert set(report) == STATUS_FIELDS and set(report["agent"]) == AGENT_FIELDS
    assert set(report["policy"]) == POLICY_FIELDS
    assert report["ok"] is False and any(problem in p for p in report["problems"])
    assert err.count("lesfocus-agent: ") == 1
    assert report["agent"]["running"] is (case == "expired policy" or case == "no policy")
    assert report["policy"]["valid"] is (case in ("no status file", "stale status file"))


@pytest.mark.parametrize("stored, problem", [
    (policy_token(LESSON_NOW, key=Ed25519PrivateKey.generate()), "Signature verification failed"),
    (policy_token(LESSON_NOW, exp=NOW - timedelta(seconds=1)), "expired"),
    ("garbage", "not a compact JWS"),
])
def test_status_of_an_invalid_stored_policy_exits_3_and_says_why(
        state_dir: Path, capsys: pytest.CaptureFixture[str], stored: str, problem: str) -> None:
    (state_dir / "policy.jws").write_text(stored)
    assert main(["status", "--state-dir", str(state_dir)]) == 3
    captured = capsys.readouterr()
    assert "policy: NOT VALID" in captured.out
    assert captured.err.count("PolicyError") == 1 and problem in captured.err


@pytest.mark.parametrize("argv, code, message", [
    (["status", "--state-dir", "{empty}"], 2, "run `lesfocus-agent enroll` first"),
    (["run", "--state-dir", "{empty}", "--backend", "dry-run", "--upstream-dns", "127.0.0.1"], 2,
     "run `lesfocus-agent enroll` first"),
    (["run", "--state-dir", "{state}", "--backend", "dry-run", "--upstream-dns", "resolver"], 2,
     "--upstream-dns 'resolver'"),
    (["run", "--state-dir", "{state}", "--backend", "dry-run", "--lan", "a/b",
      "--upstream-dns", "127.0.0.1"], 2, "--lan 'a/b'"),
    (["enroll", "--server", "ftp://x", "--token", "t", "--state-dir", "{empty}"], 2,
     "not an http(s) URL"),
    (["enroll", "--server", "http://127.0.0.1:9", "--token", "t", "--state-dir", "{empty}"], 5,
     "ServerError"),
])
def test_errors_print_once_and_map_to_exit_codes(
        state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        argv: list[str], code: int, message: str) -> None:
    argv = [a.format(empty=tmp_path / "empty", state=state_dir) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and len([l for l in err.splitlines() if "lesfocus-agent:" in l]) == 1


def test_run_with_the_dry_run_backend_logs_the_transactions_and_the_change_then_stops_on_sigterm(
        state_dir: Path) -> None:
    (state_dir / "status.json").unlink()  # the agent's own one says it has started
    with socket.socket() as probe:  # a free port for the agent's counters
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--state-dir", str(state_dir),
         "--backend", "dry-run", "--upstream-dns", "127.0.0.1",
         "--metrics", f"127.0.0.1:{metrics_port}"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        while not (state_dir / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as answer:
            counters = answer.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "dry-run nft batch" in err and "table inet" in err
    assert "segment 7 (lokaal 2.14): blocking tiktok, youtube until" in err
    assert "reloaded from" in err
    # The server is unreachable: the agent says so and keeps the stored policy.
    assert "keeping policy v1" in err
    status = json.loads((state_dir / "status.json").read_text())
    assert status["backend"] == "dry-run" and status["policy_version"] == "v1"
    assert "10.81.1." not in json.dumps(status)
    # The counters the running agent serves (agent/metrics.py): its policy and its blocks.
    assert 'lesfocus_agent_policy_info{version="v1"} 1.0' in counters
    assert 'lesfocus_agent_blocks_active{service="tiktok"} 1.0' in counters
    assert "lesfocus_agent_apply_duration_seconds_count 1.0" in counters
    assert "10.81." not in counters


def test_python_dash_m_agent_and_the_console_script_share_main() -> None:
    out = subprocess.run([sys.executable, "-m", "agent", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "enroll" in out and "run" in out and "status" in out


# --- against the real server (tests/support/live_server.py) ------------------------------------

def _live_server(tmp_path: Path) -> Any:
    from tests.support.live_server import LiveServer
    return LiveServer(tmp_path / "server").start()


def _wait_for(what: str, check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_enroll_then_run_follows_the_real_servers_policy_grants_and_heartbeats(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = _live_server(tmp_path)
    agent: subprocess.Popen[str] | None = None
    try:
        now = datetime.now(timezone.utc)
        segment = server.add_segment("lokaal 1.01", ["10.81.1.0/24"], "1.01")
        server.add_lesson("1.01", now - timedelta(minutes=1), now + timedelta(minutes=20), "l1")
        state = tmp_path / "agent"
        assert main(["enroll", "--server", server.url, "--token", server.enrollment_token,
                     "--state-dir", str(state)]) == 0
        assert f"enrolled as gateway {server.gateway_id}" in capsys.readouterr().out
        # The token works once.
        assert main(["enroll", "--server", server.url, "--token", server.enrollment_token,
                     "--state-dir", str(tmp_path / "again")]) == 5
        assert "used already" in capsys.readouterr().err

        log_path = tmp_path / "agent.log"
        with open(log_path, "w") as log_file:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--state-dir", str(state),
                 "--backend", "dry-run", "--upstream-dns", "127.0.0.1"],
                cwd=ROOT, stderr=log_file, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        first = server.current_policy_version()
        _wait_for("the first policy", lambda: f"policy {first} accepted" in log_path.read_text())
        # Accepted by the policy thread, then applied by the main loop: wait for the second too.
        _wait_for("the first policy's blocks", lambda: f"segment {segment} (lokaal 1.01): blocking"
                  in log_path.read_text())
        _wait_for("a heartbeat", lambda: server.gateway_row()["policy_version_applied"] == first)

        grant = server.grant("1.01", ["tiktok"], now, now + timedelta(minutes=10))
        _wait_for("the grant", lambda: "unblocked tiktok" in log_path.read_text())
        server.revoke(grant)
        _wait_for("the revocation", lambda: "blocking tiktok" in
                  log_path.read_text().split("unblocked tiktok", 1)[1])
        assert main(["status", "--state-dir", str(state)]) == 0
        out = capsys.readouterr().out
        assert "tiktok until" in out and f"segment {segment} lokaal 1.01" in out
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(20)
        server.close()
    assert agent.returncode == 0
    row = server.gateway_row()
    assert row["agent_version"] and row["last_contact_at"] is not None


# --- packaging, heartbeat and the loop's decisions ------------------------------------------

def test_the_systemd_unit_grants_only_net_admin_and_net_raw_and_ships_twice_identically(
) -> None:
    unit = (ROOT / "agent" / "data" / "lesfocus-agent.service").read_text()
    assert (ROOT / "docs" / "lesfocus-agent.service").read_text() == unit
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("User", "lesfocus-agent")]:
        assert settings[key] == [value], key
    assert "lesfocus-agent run" in settings["ExecStart"][0]


def test_heartbeats_carry_new_counts_per_segment_service_and_hour_and_keep_them_on_failure(
) -> None:
    from agent.errors import ServerError
    from agent.reporter import DeltaCounters, Reporter

    totals = {(7, "tiktok"): {"rejected_packets": 3, "rejected_bytes": 900}}
    sent: list[dict[str, Any]] = []
    fail = [True]

    def send(body: dict[str, Any]) -> None:
        if fail[0]:
            raise ServerError("connection refused")
        sent.append(body)

    clock = [datetime(2026, 11, 23, 9, 59, tzinfo=timezone.utc)]
    reporter = Reporter(send, [DeltaCounters(lambda: totals)], lambda: "v1", clock=lambda: clock[0])
    assert reporter.beat() is False  # kept for the next heartbeat
    totals[(7, "tiktok")] = {"rejected_packets": 5, "rejected_bytes": 1500}
    totals[(8, "youtube")] = {"dns_refused": 2}
    clock[0] = datetime(2026, 11, 23, 10, 1, tzinfo=timezone.utc)
    fail[0] = False
    assert reporter.beat() is True
    assert sent[0]["policy_version"] == "v1" and sent[0]["agent_version"]
    assert sent[0]["counters"] == [
        {"segment_id": 7, "service": "tiktok", "hour": "2026-11-23T09:00:00Z", "count": 3},
        {"segment_id": 7, "service": "tiktok", "hour": "2026-11-23T10:00:00Z", "count": 2},
        {"segment_id": 8, "service": "youtube", "hour": "2026-11-23T10:00:00Z", "count": 2}]
    assert reporter.beat() is True and sent[1]["counters"] == []
    assert not any("10.81" in json.dumps(body) for body in sent)


class RecordingEnforcer:
    """Records what the loop asks of a backend."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start(self, policy: Any) -> None:
        self.calls.append(("start", policy.version))

    def apply(self, state: Any) -> None:
        self.calls.append(("apply", {s.segment_id: sorted(s.blocked) for s in state.segments}))

    def stop(self) -> None:
        self.calls.append(("stop", None))


def test_the_loop_applies_at_boundaries_and_rebuilds_only_for_a_policy_of_another_shape(
        tmp_path: Path, state_dir: Path) -> None:
    from agent.policy_source import PolicySource, load_enrollment, verify_policy
    from agent.runner import Agent

    def policy(blocks: list[dict[str, Any]], ver: str) -> Any:
        return verify_policy(policy_token(blocks, ver=ver), load_enrollment(state_dir))

    lesson = [{"start": z(NOW + timedelta(minutes=10)), "end": z(NOW + timedelta(minutes=60)),
               "services": ["tiktok", "youtube"]}]
    clock = [NOW]
    enforcer = RecordingEnforcer()
    source = PolicySource(state_dir, load_enrollment(state_dir))
    agent = Agent(source, enforcer, backend="test", state_dir=state_dir, clock=lambda: clock[0])
    agent.policy_arrived(policy(lesson, "v1"))
    assert agent.step() == NOW + timedelta(minutes=10)
    assert enforcer.calls == [("start", "v1"), ("apply", {7: [], 8: []})]
    clock[0] = NOW + timedelta(minutes=5)
    agent.step()
    assert len(enforcer.calls) == 2  # nothing changed: no transaction
    clock[0] = NOW + timedelta(minutes=10)
    assert agent.step() == NOW + timedelta(minutes=60)
    assert enforcer.calls[-1] == ("apply", {7: ["tiktok", "youtube"], 8: []})
    # A grant for tiktok: same services and segments, so no rebuild (learned addresses stay).
    granted = [dict(lesson[0], services=["youtube"])]
    agent.policy_arrived(policy(granted, "v2"))
    agent.step()
    assert enforcer.calls[-1] == ("apply", {7: ["youtube"], 8: []})
    assert [c for c in enforcer.calls if c[0] == "start"] == [("start", "v1")]
    agent.stop()
    assert ("stop", None) not in enforcer.calls  # the table stays; its timeouts end the blocks


@pytest.mark.parametrize("resolv_conf, expected", [
    ("nameserver 192.0.2.53\n", "192.0.2.53"),
    ("# systemd-resolved stub first\nnameserver 127.0.0.53\nnameserver 2001:db8::53\n",
     "2001:db8::53"),
    ("search school.example\nnameserver fe80::1%eth0\n", "fe80::1%eth0"),
])
def test_the_upstream_resolver_defaults_to_the_first_non_loopback_nameserver(
        tmp_path: Path, resolv_conf: str, expected: str) -> None:
    from agent.config import system_resolver
    path = tmp_path / "resolv.conf"
    path.write_text(resolv_conf)
    assert system_resolver(path) == expected


@pytest.mark.parametrize("resolv_conf", ["", "nameserver 127.0.0.1\n", "nameserver banana\n"])
def test_no_usable_nameserver_is_a_config_error_that_says_what_to_pass(
        tmp_path: Path, resolv_conf: str) -> None:
    from agent.config import system_resolver
    from agent.errors import ConfigError
    path = tmp_path / "resolv.conf"
    path.write_text(resolv_conf)
    with pytest.raises(ConfigError, match="pass --upstream-dns ADDR"):
        system_resolver(path)

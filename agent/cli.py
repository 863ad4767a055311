"""`lesfocus-agent`: enroll, run and status (SPEC §4, "Agent CLI").

`main()` is the boundary where the agent's named errors are printed once and become exit codes
(ConfigError 2, PolicyError 3, EnforcerError 4, ServerError 5, NotRunningError 6).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lesfocus_policy import blocked_at

from .config import default_state_dir, make_config
from .errors import AgentError, ConfigError, EnforcerError, NotRunningError, PolicyError
from .policy_source import (
    PolicySource, PolicyStore, ServerClient, enroll, load_enrollment, load_or_create_agent_key,
    verify_policy)
from .metrics import DEFAULT_LISTEN as DEFAULT_METRICS, AgentMetrics
from .reporter import DeltaCounters, Reporter
from .runner import STATUS_FILE, Agent, build_parts

log = logging.getLogger("lesfocus.agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesfocus-agent",
        description="Enforces the school's signed lesson-time policy on this gateway.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("enroll", help="make the key pair, enrol, pin the server keys")
    p.add_argument("--server", required=True, metavar="URL", help="the server's public base URL")
    p.add_argument("--token", required=True, help="one-time token from `lesfocus gateway add`")
    p.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                   help="default: $LESFOCUS_AGENT_STATE_DIR or /var/lib/lesfocus-agent")

    p = commands.add_parser("run", help="enforce the policy until stopped")
    p.add_argument("--state-dir", type=Path, default=None, metavar="DIR")
    p.add_argument("--backend", default="nftables", choices=["nftables", "dry-run"],
                   help="dry-run logs the nftables transactions instead of applying them")
    p.add_argument("--lan", action="append", default=[], metavar="IFACE",
                   help="a classroom-side interface to observe (repeatable)")
    p.add_argument("--upstream-dns", default=None, metavar="ADDR",
                   help="resolver for names that are not blocked (default: from /etc/resolv.conf)")
    p.add_argument("--dns-port", type=int, default=5353, help=argparse.SUPPRESS)
    p.add_argument("--max-backoff", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--poll-wait", type=int, default=55, help=argparse.SUPPRESS)
    p.add_argument("--metrics", default=DEFAULT_METRICS, metavar="ADDR:PORT",
                   help=f"serve Prometheus counters on this loopback address (default "
                        f"{DEFAULT_METRICS}; `off` for none)")
    p.add_argument("--flush-on-exit", action="store_true",
                   help="remove the agent's nftables table on exit (default: keep it; every "
                        "block still ends on its own timeout, and a restart has no gap)")

    p = commands.add_parser("status", help="what is blocked now, and the policy's age and validity")
    p.add_argument("--state-dir", type=Path, default=None, metavar="DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _state_dir(value: Path | None) -> Path:
    return value if value is not None else default_state_dir()


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enrol this gateway and pin the server's keys."""
    state_dir = _state_dir(args.state_dir)
    result = enroll(args.server, args.token, state_dir)
    print(f"enrolled as gateway {result.gateway_id} at {result.server_url}; "
          f"pinned {len(result.server_keys)} server key(s) in {state_dir}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM or SIGINT."""
    config = make_config(_state_dir(args.state_dir), args.backend, args.lan, args.upstream_dns,
                         args.dns_port, args.poll_wait, args.max_backoff, args.metrics)
    enrollment = load_enrollment(config.state_dir)
    key = load_or_create_agent_key(config.state_dir)
    client = ServerClient(enrollment, key)
    source = PolicySource(config.state_dir, enrollment, client=client,
                          poll_wait=config.poll_wait, max_backoff=config.max_backoff)
    holder: dict[str, Agent] = {}
    enforcer, parts = build_parts(
        config, lambda: holder["agent"].state if holder else None,
        lambda: holder["agent"].policy.services if holder and holder["agent"].policy else {})
    sources = [DeltaCounters(p.counters) for p in [enforcer, *parts] if hasattr(p, "counters")]
    reporter = Reporter(client.heartbeat, sources,
                        lambda: holder["agent"].policy.version if holder["agent"].policy else None)
    metrics = AgentMetrics(lambda: holder.get("agent"), enforcer, parts)
    agent = Agent(source, metrics.timed(enforcer), backend=config.backend,
                  state_dir=config.state_dir,
                  parts=parts,
                  background=[lambda stop: reporter.run(stop, config.heartbeat_interval)],
                  on_install=[reporter.kick])
    holder["agent"] = agent

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping (kernel blocks end on their own timeouts)",
                 signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("lesfocus-agent starting: gateway %s, server %s, backend %s, upstream DNS %s",
             enrollment.gateway_id, enrollment.server_url, config.backend, config.upstream_dns)
    try:
        if config.metrics_listen is not None:
            metrics.serve(config.metrics_listen)
        agent.start()
        agent.run()
    finally:
        agent.stop(flush=args.flush_on_exit)
        metrics.stop()
    return 0


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{int(seconds)} s"


# The running agent rewrites status.json at least every 5 s (runner.MAX_SLEEP); older than this,
# it has stopped or hangs.
STATUS_STALE_SECONDS = 60
# Bumped only when a field of `lesfocus-agent status --json` changes meaning or goes away.
STATUS_FORMAT = 1


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return then if then.tzinfo is not None else None


def _seconds_since(now: datetime, stamp: str | None) -> int | None:
    then = _parse_time(stamp)
    return None if then is None else int((now - then).total_seconds())


def status_report(state_dir: Path, now: datetime) -> dict[str, Any]:
    """What `status` shows, as the documented JSON object (docs/agent.md), at `now`.

    Reads only the state directory. ConfigError when it holds no enrolment.
    """
    enrollment = load_enrollment(state_dir)
    status_path = state_dir / STATUS_FILE
    try:
        running = json.loads(status_path.read_text())
        if not isinstance(running, dict):
            raise ValueError("not an object")
        # The agent's own clock says when; the file's time for agents that did not write it.
        written = _parse_time(running.get("written_at")) or datetime.fromtimestamp(
            status_path.stat().st_mtime, timezone.utc)
    except (OSError, ValueError):
        running, written = None, None
    status_age = None if written is None else int((now - written).total_seconds())
    agent: dict[str, Any] = {
        "running": status_age is not None and status_age <= STATUS_STALE_SECONDS,
        "status_written_at": _iso(written), "status_age_seconds": status_age}
    for key in ("pid", "backend", "started_at", "policy_version", "applied_at", "last_contact",
                "last_error"):
        agent[key] = (running or {}).get(key)
    agent["last_contact_age_seconds"] = _seconds_since(now, agent["last_contact"])

    token = PolicyStore(state_dir).load()
    problem = "no policy stored yet" if token is None else None
    policy = None
    if token is not None:
        try:
            policy = verify_policy(token, enrollment, now=now.timestamp())
        except PolicyError as err:
            problem = str(err)
    report: dict[str, Any] = {
        "format": STATUS_FORMAT, "now": now.isoformat(), "gateway_id": enrollment.gateway_id,
        "server": enrollment.server_url, "ok": False, "problems": [], "agent": agent,
        "policy": {"valid": policy is not None, "problem": problem, "version": None,
                   "issued_at": None, "expires_at": None, "age_seconds": None,
                   "expires_in_seconds": None},
        "next_change": None, "segments": []}
    if policy is not None:
        state = blocked_at(policy, now, sorted(policy.services))
        report["policy"].update({
            "version": policy.version, "issued_at": policy.issued_at.isoformat(),
            "expires_at": policy.expires_at.isoformat(),
            "age_seconds": int((now - policy.issued_at).total_seconds()),
            "expires_in_seconds": int((policy.expires_at - now).total_seconds())})
        report["next_change"] = _iso(state.next_change)
        report["segments"] = [
            {"id": s.segment_id, "name": s.name, "cidrs": list(s.cidrs),
             "in_lesson": s.in_lesson, "lesson_until": _iso(s.lesson_until),
             "blocked": {k: v.isoformat() for k, v in sorted(s.blocked.items())},
             # The other services of the policy, each with the instant it is next blocked.
             "allowed": {k: v.isoformat() if v else None for k, v in sorted(s.allowed.items())}}
            for s in state.segments]
    else:
        report["problems"].append(f"no valid policy: {problem}")
    if running is None:
        report["problems"].append("the agent has written no status file (not running yet?)")
    elif not agent["running"]:
        report["problems"].append(f"the agent's status is {status_age} s old (stopped or stuck?)")
    report["ok"] = not report["problems"]
    return report


def _print_status(report: dict[str, Any]) -> None:
    agent, policy = report["agent"], report["policy"]
    print(f"gateway {report['gateway_id']} (server {report['server']})")
    if agent["status_written_at"] is None:
        print("agent: no status file (not running yet?)")
    else:
        print(f"agent: {'running' if agent['running'] else 'NOT RUNNING'}, pid {agent['pid']}, "
              f"backend {agent['backend']}, status written {_age(agent['status_age_seconds'])} "
              f"ago, last contact {agent['last_contact'] or 'never'}"
              + (f", last error: {agent['last_error']}" if agent["last_error"] else ""))
    if not policy["valid"]:
        print(f"policy: NOT VALID ({policy['problem']}); nothing is enforced from it")
        return
    print(f"policy {policy['version'][:16]}: valid, issued {_age(policy['age_seconds'])}"
          f" ago, expires {policy['expires_at'][:16].replace('T', ' ')}Z")
    for s in report["segments"]:
        blocked = ", ".join(f"{k} until {v[11:16]}Z" for k, v in s["blocked"].items())
        line = f"  segment {s['id']} {s['name']} ({', '.join(s['cidrs'])}): "
        if s["in_lesson"]:
            allowed = ", ".join(
                k + (f" until {v[11:16]}Z" if v and v < s["lesson_until"] else "")
                for k, v in s["allowed"].items())
            line += (f"lesson until {s['lesson_until'][11:16]}Z; "
                     f"{'blocked ' + blocked if blocked else 'nothing blocked'}"
                     + (f"; allowed {allowed}" if allowed else ""))
        else:
            line += blocked or "nothing blocked"
        print(line)
    if report["next_change"]:
        print(f"next change: {report['next_change']}")


def cmd_status(args: argparse.Namespace) -> int:
    """Print what the stored policy blocks now, per segment, and the policy's age and validity.

    Exit 0 when a valid policy is stored and the agent runs, 3 without a valid policy, 6 when
    the agent is not running (no status file, or none written for STATUS_STALE_SECONDS).
    """
    state_dir = _state_dir(args.state_dir)
    report = status_report(state_dir, datetime.now(timezone.utc))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_status(report)
    if not report["policy"]["valid"]:
        raise PolicyError(f"no valid policy in {state_dir}: {report['policy']['problem']}")
    if not report["agent"]["running"]:
        raise NotRunningError(report["problems"][0])
    return 0


COMMANDS = {"enroll": cmd_enroll, "run": cmd_run, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    """Run one command; named errors are printed once and mapped to their exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, EnforcerError, PolicyError, AgentError) as err:
        print(err.show(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130

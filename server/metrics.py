"""`GET /metrics`: the server's counters in the Prometheus text format (prometheus_client).

Access (never open): the endpoint answers 404 unless `LESFOCUS_METRICS_TOKEN` or
`LESFOCUS_METRICS_ALLOW` is set. With a token, a scrape must send `Authorization: Bearer
<token>` (compared in constant time); with an allow list (comma-separated addresses or networks),
the caller's address (`request.remote_addr`, after ProxyFix) must be in it; with both, both hold.
Anything else is 403 without saying which check failed.

Processes: every `lesfocus serve` process and the `lesfocus worker` of one host count into one
directory when `PROMETHEUS_MULTIPROC_DIR` is set for all of them (prometheus_client's
multiprocess mode, read by the library when it is imported); any serve process of that host then
answers with the sum. Without it each process shows only its own requests. What is read from
the database at scrape time (import queue, timetable sources' state) is the same from every
process and host.

Privacy: labels are route templates, status codes, methods, timetable source ids, job states and
results; never a client address, a gateway, a person or a visited name.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .models import ImportJob, TimetableSource, utcnow

log = logging.getLogger("lesfocus.metrics")

bp = Blueprint("metrics", __name__)

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Up to the long poll's 60 s: its requests are in the same histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("lesfocus_http_requests", "HTTP requests answered, by route template and status",
                   ["method", "route", "status"])
LATENCY = Histogram("lesfocus_http_request_duration_seconds",
                    "Time from the request reaching the app to its answer, by route template",
                    ["method", "route"], buckets=LATENCY_BUCKETS)
LONG_POLLS = Gauge("lesfocus_long_polls_waiting", "Agents' policy long polls waiting now",
                   multiprocess_mode="livesum")
COMPILE_SECONDS = Histogram("lesfocus_policy_compile_seconds", "Time to compile a gateway's policy",
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                     2.5, 5))
POLICY_BYTES = Histogram("lesfocus_policy_size_bytes", "Size of the signed policies served",
                         buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304))
FEED_DELAY = Histogram("lesfocus_change_feed_delay_seconds",
                       "From a commit in one process to its notification in another (PostgreSQL)",
                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SYNCS = Counter("lesfocus_timetable_syncs", "Timetable source syncs by source id and result",
                ["source", "result"])
ALERT_MAILS = Counter("lesfocus_alert_mails", "Alert e-mails by outcome (sent, failed)",
                      ["outcome"])


DATABASE_FAMILIES = ("lesfocus_import_jobs", "lesfocus_timetable_source_failing",
                     "lesfocus_timetable_source_last_success_timestamp_seconds")


def metric_families() -> list[str]:
    """The name of every metric family /metrics exports (docs/grafana-dashboard.json uses them)."""
    names = [family.name for metric in (REQUESTS, LATENCY, LONG_POLLS, COMPILE_SECONDS,
                                        POLICY_BYTES, FEED_DELAY, SYNCS, ALERT_MAILS)
             for family in metric.describe()]
    return names + list(DATABASE_FAMILIES)


def observe_sync(source_id: int, result: str) -> None:
    """Count one sync of a timetable source (result: synced, unchanged, failed)."""
    SYNCS.labels(str(source_id), result).inc()


def observe_feed_delay(sent_at: float) -> None:
    """Note the delay of a change notification sent at `sent_at` (epoch seconds)."""
    FEED_DELAY.observe(max(0.0, time.time() - sent_at))


class DatabaseCollector:
    """What the database says at scrape time: the import queue and each timetable source."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges; none when the database cannot be read (logged)."""
        try:
            states = dict(db.session.execute(
                select(ImportJob.state, func.count()).group_by(ImportJob.state)).all())
            sources = db.session.execute(select(
                TimetableSource.id, TimetableSource.last_attempt_at,
                TimetableSource.last_success_at, TimetableSource.last_error)
                .where(TimetableSource.kind != "file")).all()
        except SQLAlchemyError as err:
            db.session.rollback()
            log.warning("metrics: the database could not be read: %s", type(err).__name__)
            return
        queue = GaugeMetricFamily("lesfocus_import_jobs", "Dashboard imports by state",
                                  labels=["state"])
        for state in ("queued", "running"):
            queue.add_metric([state], states.get(state, 0))
        yield queue
        failing = GaugeMetricFamily(
            "lesfocus_timetable_source_failing", "1 while the source's last sync failed",
            labels=["source"])
        success = GaugeMetricFamily(
            "lesfocus_timetable_source_last_success_timestamp_seconds",
            "When the source last synced without error (epoch seconds)", labels=["source"])
        for source_id, _attempt, last_ok, error in sources:
            failing.add_metric([str(source_id)], 1 if error else 0)
            if last_ok is not None:
                success.add_metric([str(source_id)], last_ok.timestamp())
        yield failing
        yield success


def _route() -> str:
    rule = request.url_rule
    # An unknown path is one label, not one per path tried.
    return rule.rule if rule is not None else "(unmatched)"


def _allowed_networks(raw: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for part in re.split(r"[,\s]+", raw.strip()):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"LESFOCUS_METRICS_ALLOW: {part!r} is not an address or "
                                 f"network") from None
    return networks


def _may_scrape(app: Flask) -> bool:
    token = app.config.get("LESFOCUS_METRICS_TOKEN") or ""
    networks = app.extensions["lesfocus.metrics_allow"]
    if not token and not networks:
        abort(404)  # not configured: as if there were no such page
    if token:
        sent = request.headers.get("Authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()):
            return False
    if networks:
        try:
            caller = ipaddress.ip_address(request.remote_addr or "")
        except ValueError:
            return False
        if not any(caller in network for network in networks):
            return False
    return True


@bp.get("/metrics")
def metrics() -> Response:
    """The counters in the Prometheus text format (see the module docstring for access)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not _may_scrape(app):
        abort(403)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(DatabaseCollector(utcnow()))  # type: ignore[arg-type]
    return Response(text + generate_latest(database), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Cache-Control": "no-store"})


def _before() -> None:
    g.metrics_started = time.perf_counter()


def _after(response: Any) -> Any:
    started = g.pop("metrics_started", None)
    if started is not None:
        method = request.method if request.method in METHODS else "OTHER"
        route = _route()
        REQUESTS.labels(method, route, str(response.status_code)).inc()
        LATENCY.labels(method, route).observe(time.perf_counter() - started)
    return response


def forget_dead_processes(directory: str) -> int:
    """Remove the live gauges (long polls waiting) of processes that are gone; their counters
    stay, so totals never go down. Returns how many processes were forgotten."""
    gone = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1][:-3])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            gone.add(pid)
        except PermissionError:
            pass  # alive, another user's
    for pid in gone:
        mark_process_dead(pid, directory)
    return len(gone)


def init_app(app: Flask) -> None:
    """Register /metrics and count every request; check the access settings once."""
    app.extensions["lesfocus.metrics_allow"] = _allowed_networks(
        str(app.config.get("LESFOCUS_METRICS_ALLOW") or ""))
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not a folder this "
                             f"process can write (create it; see docs/deploy-server.md)")
        forget_dead_processes(directory)
    app.before_request(_before)
    app.after_request(_after)
    app.register_blueprint(bp)

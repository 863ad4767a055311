"""The real lesfocus server for agent tests: `lesfocus serve` on a temporary SQLite file (or an
empty PostgreSQL database given to it), with more processes on the same database if asked.

The server (tests/support/served.py: gunicorn, as users run it) listens in the namespace the test
chooses (the lab's `inet`, so the agent in `gw` reaches it over the gateway's WAN link, as a
school gateway reaches its server), or on 127.0.0.1 for tests that run the agent in the host
namespace. Grants and revocations go through the API as the dashboard sends them, so they wake
the agents' long polls in the serving process as in production. Segments and lessons are
written in this process through the server's own functions (the API has no lesson writes); the
serving process sees them through its change watcher within its recheck interval (2 s).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.support.served import ServedApp

LEADER, LEADER_PASSWORD = "leider", "correct horse battery staple"


class LiveServer:
    """`lesfocus serve` with school `e2e`, a leader, and one gateway with an enrolment token."""

    def __init__(self, tmp_path: Path, host: str = "127.0.0.1", ns: Any = None,
                 database_url: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.host = host
        self.ns = ns
        # An empty database to use instead of a new SQLite file (PostgreSQL: several processes).
        self.database_url = database_url
        self.served: ServedApp | None = None
        self.others: list[ServedApp] = []

    def _entered(self) -> Any:
        return self.ns.entered() if self.ns is not None else nullcontext()

    def start(self) -> "LiveServer":
        """Create the database, the school and the gateway, and start serving."""
        from flask_migrate import upgrade

        from server.app import create_app
        from server.extensions import db
        from server.gateways import create_gateway, issue_enrollment_token
        from server.models import Person
        from server.passwords import hash_password
        from tests.support.schools import seed_school

        self.tmp_path.mkdir(parents=True, exist_ok=True)
        settings = {"INSTANCE_PATH": str(self.tmp_path / "instance"),
                    "DATABASE_URL": (self.database_url
                                     or f"sqlite:///{self.tmp_path / 'server.sqlite3'}"),
                    "SECRET_KEY": "e2e-secret"}
        self.settings = settings
        # No public URL here: ServedApp makes it the URL it serves on (LESFOCUS_PUBLIC_URL is
        # required by `lesfocus serve`), unless the environment names one (a proxy in front).
        self.served = ServedApp({f"LESFOCUS_{k}": v for k, v in settings.items()},
                                self.tmp_path / "serve.log", host=self.host, ns=self.ns)
        self.app = create_app(settings)
        with self.app.app_context():
            upgrade()
            school = seed_school("e2e", "E2E-college")
            leader = Person(school_id=school.id, username=LEADER, display_name="Leider",
                            roles=["leader", "teacher", "it_admin"],
                            password_hash=hash_password(LEADER_PASSWORD))
            db.session.add(leader)
            gateway = create_gateway(school, "gw-e2e", actor="e2e")
            self.enrollment_token = issue_enrollment_token(gateway, actor="e2e")
            db.session.commit()
            self.school_id, self.gateway_id, self.leader_id = school.id, gateway.id, leader.id
        self.served.start()
        self.port, self.url = self.served.port, self.served.url
        # Further processes of this deployment (start_another) share the first one's public
        # URL, as servers behind one proxy do: an agent's tokens name that one address.
        self.settings["PUBLIC_URL"] = os.environ.get("LESFOCUS_PUBLIC_URL") or self.url
        # The test's own app then compiles the very policies the served one hands out (their
        # issuer, hence their version, is the public URL).
        self.app.config["LESFOCUS_PUBLIC_URL"] = self.settings["PUBLIC_URL"]
        return self

    def start_another(self) -> ServedApp:
        """A second `lesfocus serve` process on the same database and instance folder (the same
        signing key), on its own port, as a second server of a deployment; stopped by close()."""
        n = len(self.others) + 2
        other = ServedApp({f"LESFOCUS_{k}": v for k, v in self.settings.items()},
                          self.tmp_path / f"serve-{n}.log", host=self.host, ns=self.ns)
        self.others.append(other)
        return other.start()

    def serve(self) -> None:
        """(Re)start serving on the same address."""
        assert self.served is not None
        self.served.start(port=self.port)

    def stop(self) -> None:
        """Stop serving at once (the database stays; `serve()` starts again)."""
        if self.served is not None:
            self.served.stop()

    def close(self) -> None:
        """Stop serving and release this process's database connections."""
        self.stop()
        for other in self.others:
            other.stop()
        if getattr(self, "app", None) is not None:
            from server.extensions import db
            with self.app.app_context():
                db.session.remove()
                db.engine.dispose()

    # -- what the school does -------------------------------------------------------------------
    def add_segment(self, name: str, cidrs: list[str], room: str) -> int:
        """A segment behind the gateway serving `room`; its id."""
        from server.extensions import db
        from server.models import Gateway, School
        from server.network import add_segment

        with self.app.app_context():
            segment = add_segment(db.session.get(School, self.school_id),
                                  db.session.get(Gateway, self.gateway_id), name, cidrs, [room],
                                  actor="e2e")
            db.session.commit()
            segment_id = segment.id
        return segment_id

    def add_classrooms(self, count: int, now: datetime) -> None:
        """`count` more classrooms behind the gateway, each a segment (an IPv4 /24 in 10.160/12
        and an IPv6 /64) with a school week of lessons from `now`'s hour: 10 periods a day of 45
        minutes. Written in bulk; nobody sends traffic to these networks."""
        import sqlalchemy as sa

        from server.extensions import db
        from server.models import Lesson, Room, Segment, SegmentCidr, lesson_rooms, segment_rooms

        hour = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
        periods = [hour + timedelta(days=d, minutes=50 * p) for d in range(7) for p in range(10)]
        with self.app.app_context():
            conn = db.session.connection()
            next_lesson = conn.execute(sa.select(sa.func.coalesce(sa.func.max(Lesson.id), 0))
                                       ).scalar() + 1
            for i in range(count):
                room_id = conn.execute(sa.insert(Room).values(
                    school_id=self.school_id, code=f"x{i}")).inserted_primary_key[0]
                segment_id = conn.execute(sa.insert(Segment).values(
                    school_id=self.school_id, gateway_id=self.gateway_id,
                    name=f"klas x{i}")).inserted_primary_key[0]
                conn.execute(sa.insert(SegmentCidr), [
                    {"segment_id": segment_id, "cidr": f"10.{160 + i // 256}.{i % 256}.0/24"},
                    {"segment_id": segment_id, "cidr": f"fd00:160:{i:x}::/64"}])
                conn.execute(sa.insert(segment_rooms), [{"segment_id": segment_id,
                                                         "room_id": room_id}])
                rows = [{"id": next_lesson + n, "school_id": self.school_id, "start": start,
                         "end": start + timedelta(minutes=45), "subject": "les",
                         "cancelled": False, "source": "bench", "source_id": f"x{i}-{n}",
                         "updated_at": hour} for n, start in enumerate(periods)]
                next_lesson += len(rows)
                conn.execute(sa.insert(Lesson), rows)
                conn.execute(sa.insert(lesson_rooms), [{"lesson_id": r["id"], "room_id": room_id}
                                                       for r in rows])
            db.session.commit()

    def add_lesson(self, room: str, start: datetime, end: datetime, source_id: str) -> int:
        """A lesson in `room` from `start` to `end` (aware); its id."""
        from sqlalchemy import select

        from server.extensions import db
        from server.models import Lesson, Person, Room

        with self.app.app_context():
            room_row = db.session.scalar(select(Room).where(Room.school_id == self.school_id,
                                                            Room.code == room))
            lesson = Lesson(school_id=self.school_id, start=start.astimezone(timezone.utc),
                            end=end.astimezone(timezone.utc), subject="e2e", source="manual",
                            source_id=source_id, rooms=[room_row],
                            teachers=[db.session.get(Person, self.leader_id)])
            db.session.add(lesson)
            db.session.commit()
            lesson_id = lesson.id
        return lesson_id

    def end_lesson(self, source_id: str, at: datetime) -> None:
        """Cut the lesson `source_id` short: it ends at `at` (aware)."""
        from sqlalchemy import select

        from server.extensions import db
        from server.models import Lesson

        with self.app.app_context():
            lesson = db.session.scalar(select(Lesson).where(Lesson.school_id == self.school_id,
                                                            Lesson.source_id == source_id))
            assert lesson is not None, source_id
            lesson.end = at.astimezone(timezone.utc)
            db.session.commit()

    def grant(self, room: str, services: list[str] | None, start: datetime,
              end: datetime, url: str | None = None) -> int:
        """A room exception granted by the leader through the API (of the process at `url`, by
        default the first); its id."""
        status, body = self.api("POST", "/api/v1/exceptions", {
            "scope": "room", "room": room, "services": services,
            "start": start.astimezone(timezone.utc).isoformat(),
            "end": end.astimezone(timezone.utc).isoformat()}, token=self.login(url), url=url)
        assert status == 201, body
        return int(body["id"])

    def revoke(self, grant_id: int, url: str | None = None) -> None:
        """Revoke an exception as the leader through the API (of the process at `url`)."""
        status, body = self.api("DELETE", f"/api/v1/exceptions/{grant_id}",
                                token=self.login(url), url=url)
        assert status == 200, body

    def gateway_row(self) -> dict[str, Any]:
        """The gateway's contact state and counters as the server stored them."""
        from sqlalchemy import select

        from server.extensions import db
        from server.models import Gateway, GatewayCounter

        with self.app.app_context():
            gateway = db.session.get(Gateway, self.gateway_id)
            counters = db.session.scalars(select(GatewayCounter).where(
                GatewayCounter.gateway_id == self.gateway_id)).all()
            return {"last_contact_at": gateway.last_contact_at,
                    "policy_version_applied": gateway.policy_version_applied,
                    "agent_version": gateway.agent_version,
                    "counters": [(c.segment_id, c.service_id, c.count) for c in counters]}

    def current_policy_version(self) -> str:
        """The version the server would send the gateway now."""
        from server.extensions import db
        from server.models import Gateway
        from server.policy import gateway_policy

        with self.app.app_context():
            return gateway_policy(db.session.get(Gateway, self.gateway_id)).version

    # -- the API, as the dashboard uses it ------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, token: str | None = None,
            url: str | None = None) -> Any:
        """One JSON request to the API (of the process at `url`, by default the first) from the
        server's own namespace; (status, body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((url or self.url) + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with self._entered():
            try:
                with urllib.request.urlopen(req, timeout=10) as answer:
                    return answer.status, json.loads(answer.read() or b"null")
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read() or b"null")

    def login(self, url: str | None = None) -> str:
        """An API token of the leader (from the process at `url`)."""
        status, body = self.api("POST", "/api/v1/auth/token",
                                {"username": LEADER, "password": LEADER_PASSWORD}, url=url)
        assert status == 200, body
        return body["token"]

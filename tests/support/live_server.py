"""The real lesfocus server for agent tests: a temporary SQLite instance served by waitress.

The listening socket is made in the namespace the test chooses (the lab's `inet`, so the agent in
`gw` reaches it over the gateway's WAN link, as a school gateway reaches its server), or on
127.0.0.1 for tests that run the agent in the host namespace. Lessons, grants and revocations are
written in-process through the server's own functions, then `notify.policy_changed` wakes the
agents' long polls exactly as the API does.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LEADER, LEADER_PASSWORD = "leider", "correct horse battery staple"


class LiveServer:
    """A server in a thread: school `e2e`, a leader, one gateway with an enrolment token."""

    def __init__(self, tmp_path: Path, host: str = "127.0.0.1", ns: Any = None) -> None:
        self.tmp_path = tmp_path
        self.host = host
        self.ns = ns
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def _entered(self) -> Any:
        return self.ns.entered() if self.ns is not None else nullcontext()

    def start(self) -> "LiveServer":
        """Create the database, the school and the gateway, and start serving."""
        from flask_migrate import upgrade

        from server.app import create_app
        from server.extensions import db
        from server.gateways import create_gateway, issue_enrollment_token
        from server.models import Person, School
        from server.passwords import hash_password
        from server.seed import seed_reminders, seed_services

        with self._entered():
            self.sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self.app = create_app({
            "INSTANCE_PATH": str(self.tmp_path / "instance"),
            "DATABASE_URL": f"sqlite:///{self.tmp_path / 'server.sqlite3'}",
            "SECRET_KEY": "e2e-secret", "PUBLIC_URL": self.url,
        })
        with self.app.app_context():
            upgrade()
            seed_services()
            school = School(slug="e2e", name="E2E-college", timezone="Europe/Amsterdam",
                            aliases=[])
            db.session.add(school)
            db.session.flush()
            seed_reminders(school)
            leader = Person(school_id=school.id, username=LEADER, display_name="Leider",
                            roles=["leader", "teacher", "it_admin"],
                            password_hash=hash_password(LEADER_PASSWORD))
            db.session.add(leader)
            gateway = create_gateway(school, "gw-e2e", actor="e2e")
            self.enrollment_token = issue_enrollment_token(gateway, actor="e2e")
            db.session.commit()
            self.school_id, self.gateway_id, self.leader_id = school.id, gateway.id, leader.id
        self.serve()
        return self

    def serve(self) -> None:
        """(Re)start serving on the same socket address."""
        from waitress.server import create_server

        if self.sock is None:
            with self._entered():
                self.sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((self.host, self.port))
            self.sock.listen(128)
        self.server = create_server(self.app, sockets=[self.sock], threads=12,
                                    channel_timeout=120, clear_untrusted_proxy_headers=True)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving (the database stays; `serve()` starts again)."""
        if self.server is not None:
            # Let requests in flight (long polls) finish first: closing waitress under them
            # makes it log EBADF tracebacks for its trigger pipe.
            self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=6)
            self.server.close()
            # waitress closes its listening sockets on close; the wake-up below ends run().
            self.thread.join(5)
            self.server = None
            self.sock = None

    # -- what the school does -------------------------------------------------------------------
    def _changed(self) -> None:
        from server import notify
        notify.policy_changed(self.school_id)

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
        self._changed()
        return segment_id

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
        self._changed()
        return lesson_id

    def grant(self, room: str, services: list[str] | None, start: datetime,
              end: datetime) -> int:
        """A room exception granted by the leader (in-process); its id."""
        from sqlalchemy import select

        from server.extensions import db
        from server.grants import grant_exception
        from server.models import Person, Room

        with self.app.app_context():
            room_row = db.session.scalar(select(Room).where(Room.school_id == self.school_id,
                                                            Room.code == room))
            grant = grant_exception(db.session.get(Person, self.leader_id), scope="room",
                                    room=room_row, services=services, start=start, end=end)
            db.session.commit()
            grant_id = grant.id
        self._changed()
        return grant_id

    def revoke(self, grant_id: int) -> None:
        """Revoke an exception as the leader (in-process)."""
        from server.extensions import db
        from server.grants import revoke_exception
        from server.models import ExceptionGrant, Person

        with self.app.app_context():
            revoke_exception(db.session.get(Person, self.leader_id),
                             db.session.get(ExceptionGrant, grant_id))
            db.session.commit()
        self._changed()

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
            return gateway_policy(db.session.get(Gateway, self.gateway_id))[0]

    # -- the API, as the dashboard uses it ------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """One JSON request to the API from the server's own namespace; (status, body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with self._entered():
            try:
                with urllib.request.urlopen(req, timeout=10) as answer:
                    return answer.status, json.loads(answer.read() or b"null")
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read() or b"null")

    def login(self) -> str:
        """An API token of the leader."""
        status, body = self.api("POST", "/api/v1/auth/token",
                                {"username": LEADER, "password": LEADER_PASSWORD})
        assert status == 200, body
        return body["token"]

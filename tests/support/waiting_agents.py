"""Many enrolled gateways whose agents long-poll a served app over raw sockets (tests and benches).

The gateways are written straight into the database (public key and enrolment time set, as
`POST /gateways/enroll` leaves them), each with one classroom segment serving one shared room, so
one lesson in that room changes every gateway's policy at once. The long polls are plain HTTP/1.1
requests on sockets this process holds open, so thousands cost the test almost nothing.
"""

from __future__ import annotations

import json
import resource
import socket
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

SHARED_ROOM = "shared"


def add_enrolled_gateways(app: Flask, count: int, school_slug: str = "test"
                          ) -> dict[str, Ed25519PrivateKey]:
    """`count` enrolled gateways of the school, each with a segment serving SHARED_ROOM."""
    from sqlalchemy import select

    from server.extensions import db
    from server.models import Gateway, Room, School, Segment, SegmentCidr
    from server.tokens import public_key_pem

    keys: dict[str, Ed25519PrivateKey] = {}
    now = datetime.now(timezone.utc)
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == school_slug))
        assert school is not None
        room = db.session.scalar(select(Room).where(Room.school_id == school.id,
                                                    Room.code == SHARED_ROOM))
        if room is None:
            room = Room(school_id=school.id, code=SHARED_ROOM)
            db.session.add(room)
        for index in range(count):
            key = Ed25519PrivateKey.generate()
            gateway = Gateway(school_id=school.id, name=f"gw-{uuid.uuid4().hex[:8]}",
                              public_key_pem=public_key_pem(key.public_key()), enrolled_at=now)
            db.session.add(gateway)
            db.session.flush()
            keys[gateway.id] = key
            cidr = SegmentCidr(cidr=f"10.{index // 250}.{index % 250}.0/24")
            db.session.add(Segment(school_id=school.id, gateway_id=gateway.id,
                                   name=f"seg-{gateway.name}", cidrs=[cidr], rooms=[room]))
        db.session.commit()
    return keys


def add_lesson_in_shared_room(app: Flask, school_slug: str = "test") -> None:
    """A lesson in SHARED_ROOM an hour from now: every gateway's policy changes."""
    from sqlalchemy import select

    from server.extensions import db
    from server.models import Lesson, Room, School

    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == school_slug))
        room = db.session.scalar(select(Room).where(Room.code == SHARED_ROOM))
        db.session.add(Lesson(school_id=school.id, start=start, end=start + timedelta(minutes=50),
                              subject="wake", source="manual", source_id=uuid.uuid4().hex,
                              rooms=[room]))
        db.session.commit()


def agent_token(gateway_id: str, key: Ed25519PrivateKey, audience: str) -> str:
    """An agent's request token (EdDSA, sub = gateway id, 5 minutes)."""
    issued = int(time.time())
    return jwt.encode({"sub": gateway_id, "aud": audience, "iat": issued, "exp": issued + 300,
                       "jti": uuid.uuid4().hex}, key, algorithm="EdDSA")


def current_versions(url: str, keys: dict[str, Ed25519PrivateKey], audience: str
                     ) -> dict[str, str]:
    """Each gateway's policy version, fetched as its agent would (8 at a time)."""
    def fetch(gateway_id: str) -> tuple[str, str]:
        request = urllib.request.Request(f"{url}/api/v1/gateways/self/policy?format=2", headers={
            "Authorization": f"Bearer {agent_token(gateway_id, keys[gateway_id], audience)}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return gateway_id, json.loads(answer.read())["version"]

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(fetch, keys))


def open_long_polls(port: int, keys: dict[str, Ed25519PrivateKey], versions: dict[str, str],
                    audience: str, wait: int) -> dict[str, socket.socket]:
    """One waiting long poll per gateway, each on its own socket (sent, not answered yet)."""
    polls: dict[str, socket.socket] = {}
    for gateway_id, key in keys.items():
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall((f"GET /api/v1/gateways/self/policy?wait={wait}&format=2 HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\n"
                      f"Authorization: Bearer {agent_token(gateway_id, key, audience)}\r\n"
                      f'If-None-Match: "{versions[gateway_id]}"\r\n\r\n').encode())
        polls[gateway_id] = sock
    return polls


def read_status(sock: socket.socket, timeout: float) -> int:
    """The status code of the answer on `sock` (0 when closed without one)."""
    sock.settimeout(timeout)
    head = b""
    while b"\r\n" not in head:
        piece = sock.recv(4096)
        if not piece:
            return 0
        head += piece
    return int(head.split(b" ", 2)[1])


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards `wanted`; the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft

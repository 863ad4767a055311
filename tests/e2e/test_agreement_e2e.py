"""End to end: the extension's lesson status, the teacher's "Nu" page and `lesfocus-agent status`
say the same for every service, with the same end times, when two lessons follow each other in
one room and only the second one has an exception (the case in which the first release's readers
disagreed: the server said TikTok until the first lesson's end, the agent the second's).

The lab of tests/e2e: a real `lesfocus serve` in `inet`, the agent with nftables in `gw`, client
1 in room 1.01. The lesson status is asked from client 1's network namespace over HTTP, as the
extension on a classroom laptop asks; the Nu page is rendered by the server's code for the
leader (who teaches both lessons) on the same database; the agent's status is its CLI's JSON.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.dashboard import sign_in
from tests.support.live_server import LEADER, LEADER_PASSWORD
from tests.support.realparts import require
from tests.support.world import World, utcnow

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    require(netns.available(), "root with ip(8) and nft(8) for network namespaces")
    w = World(tmp_path).open()
    try:
        yield w
    finally:
        w.close()


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _lesson_status(world: World) -> dict:
    """GET /api/v1/lesson-status from client 1's network, as the extension asks."""
    with world.lab.c1.entered():
        with urllib.request.urlopen(f"{world.server.url}/api/v1/lesson-status",
                                    timeout=10) as answer:
            return json.loads(answer.read())


def _agent_status(world: World) -> dict:
    out = world.lab.gw.exec([sys.executable, "-m", "agent", "status", "--json", "--state-dir",
                             str(world.state_dir)])
    return json.loads(out.stdout)


def _now_page_lines(world: World) -> list[tuple[bool, set[str], datetime | None]]:
    import re
    client = world.server.app.test_client()
    sign_in(client, LEADER, LEADER_PASSWORD)
    page = client.get("/nu").get_data(as_text=True)
    return [(kind == "blocked", set(ids.split()), _instant(until)) for kind, ids, until in
            re.findall(r'<li class="(blocked|open)" data-services="([^"]*)"\s+'
                       r'data-until="([^"]*)"', page)]


def test_banner_now_page_and_agent_status_agree_on_every_service_and_end(world: World) -> None:
    # Lesson A runs now in room 1.01; lesson B follows it at once, with Instagram allowed.
    a_start, a_end = world.lesson(starts_in=-60, length=240, room="1.01")
    b_end = a_end + timedelta(seconds=240)
    b_id = world.server.add_lesson("1.01", a_end, b_end, "agree-b")
    token = world.server.login()
    status, body = world.server.api("POST", "/api/v1/exceptions", {
        "scope": "lesson", "lesson_id": b_id, "services": ["instagram"],
        "start": a_end.isoformat(), "end": b_end.isoformat()}, token)
    assert status == 201, body
    world.wait_for_current_policy()
    assert utcnow() < a_end - timedelta(seconds=30), "the set-up took lesson A's time"

    banner = _lesson_status(world)
    agent = _agent_status(world)
    lines = _now_page_lines(world)

    (segment,) = [s for s in agent["segments"] if s["id"] == world.seg1]
    agent_blocked = {s: _instant(t) for s, t in segment["blocked"].items()}
    # What the rule says: Instagram until A's end, every other service until B's end.
    assert agent_blocked["instagram"] == a_end
    assert {s for s, t in agent_blocked.items() if t == b_end} == set(agent_blocked) - {
        "instagram"}
    assert segment["in_lesson"] and _instant(segment["lesson_until"]) == b_end

    # The extension's answer, service by service.
    assert banner["in_lesson"] is True
    assert set(banner["blocked_services"]) == set(agent_blocked)
    assert {s: _instant(v["until"]) for s, v in banner["services"].items() if v["blocked"]} == \
        agent_blocked
    assert _instant(banner["until"]) == b_end

    # The Nu page: every line's services and end, blocked ones only (nothing is allowed now).
    page_blocked = {s: until for blocked, ids, until in lines if blocked for s in ids}
    assert page_blocked == agent_blocked
    assert not [line for line in lines if not line[0]]

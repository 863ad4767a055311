"""The policy compiler on hand-made timetables, and the policy of a gateway from the database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt
import pytest
from sqlalchemy import select

from lesfocus_policy import Policy, parse_claims, status_of, to_claims

from server.extensions import db
from server.gateways import create_gateway
from server.models import ExceptionGrant, Gateway, Group, Lesson, Room, School
from server.network import add_segment
from server.policy import (ExceptionInput, LessonInput, PolicyInputs, SegmentInput, compile_policy,
                           content_version, gateway_policy, load_policy_inputs)

CATALOG = {
    "youtube": ("YouTube", ("youtube.com", "ytimg.com")),
    "tiktok": ("TikTok", ("tiktok.com",)),
    "instagram": ("Instagram", ("instagram.com",)),
}
ALL = ["instagram", "tiktok", "youtube"]


def t(hour: int, minute: int = 0, day: int = 23) -> datetime:
    """An instant on Monday 23 November 2026 (UTC)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc)


def z(hour: int, minute: int = 0, day: int = 23) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def inputs(lessons=(), exceptions=(), segments=None, blocked=None, window=(t(0), t(0, day=30)),
           services=None) -> PolicyInputs:
    return PolicyInputs(
        gateway_id="gw-1", issuer="http://lesfocus.test", timezone="Europe/Amsterdam",
        window=window, services=CATALOG if services is None else services,
        blocked_services=blocked,
        segments=tuple(segments or (SegmentInput(1, "lokaal-1", ("10.20.1.0/24",), (1,)),)),
        lessons=tuple(lessons), exceptions=tuple(exceptions))


def blocks(policy: Policy, segment_id=1):
    """The segment's blocks that block something, as the 1.0 document writes them."""
    segment = next(s for s in to_claims(policy, "1.0")["segments"] if s["id"] == segment_id)
    return [(b["start"], b["end"], b["services"]) for b in segment["blocks"]]


def intervals(policy: Policy, segment_id=1):
    """Every block of the segment, lessons that exceptions open entirely included."""
    return [(b.start, b.end, sorted(b.services)) for b in policy.segment(segment_id).blocks]


def lesson(id_, start, end, room=1, groups=(10,), cancelled=False):
    return LessonInput(id_, start, end, (room,) if isinstance(room, int) else tuple(room),
                       tuple(groups), cancelled)


def exc(scope, start, end, services=None, lesson_id=None, room_id=None, group_id=None,
        revoked_at=None):
    return ExceptionInput(scope, lesson_id, room_id, group_id,
                          None if services is None else tuple(services), start, end, revoked_at)


def test_claims_1_0_have_the_shape_of_spec_section_4():
    policy = compile_policy(inputs([lesson(1, t(8, 30), t(9, 20))]))
    claims = to_claims(policy, "1.0")
    assert set(claims) == {"iss", "aud", "ver", "tz", "window", "services", "segments", "iat",
                           "exp"}
    assert claims["aud"] == "gw-1"
    assert claims["iss"] == "http://lesfocus.test"
    assert claims["tz"] == "Europe/Amsterdam"
    assert claims["window"] == {"start": z(0), "end": z(0, day=30)}
    assert claims["services"]["youtube"] == {"name": "YouTube",
                                             "domains": ["youtube.com", "ytimg.com"]}
    assert claims["segments"] == [{"id": 1, "name": "lokaal-1", "cidrs": ["10.20.1.0/24"],
                                   "blocks": [{"start": z(8, 30), "end": z(9, 20),
                                               "services": ALL}]}]


def test_claims_2_0_pack_blocks_as_offsets_and_service_masks():
    policy = compile_policy(inputs([lesson(1, t(8, 30), t(9, 20)), lesson(2, t(9, 30), t(10))],
                                   [exc("lesson", t(9, 30), t(10), ["tiktok"], lesson_id=2)]))
    claims = to_claims(policy)
    assert claims["fmt"] == "2.0"
    assert claims["window"] == [int(t(0).timestamp()), int(t(0, day=30).timestamp())]
    assert list(claims["services"]) == ALL  # bit 0 instagram, bit 1 tiktok, bit 2 youtube
    (segment,) = claims["segments"]
    assert segment["b"] == [int(t(8, 30).timestamp()), 50 * 60, 0b111, 10 * 60, 30 * 60, 0b101]
    assert parse_claims(claims) == policy


def test_lesson_that_an_exception_opens_entirely_stays_a_lesson_without_blocks():
    policy = compile_policy(inputs([lesson(1, t(9), t(10)), lesson(2, t(10), t(11))],
                                   [exc("lesson", t(10), t(11), lesson_id=2)]))
    assert intervals(policy) == [(t(9), t(10), ALL), (t(10), t(11), [])]
    assert blocks(policy) == [(z(9), z(10), ALL)]  # the first release's agents never saw it
    state = status_of(policy, 1, t(10, 5))
    assert state.in_lesson and state.blocked == {} and state.lesson_until == t(11)


def test_adjacent_lessons_with_an_exception_in_the_second_are_read_the_agents_way():
    # The example: lesson A 09:00-09:50, lesson B 09:50-10:40 with Instagram allowed.
    policy = compile_policy(inputs([lesson(1, t(9), t(9, 50)), lesson(2, t(9, 50), t(10, 40))],
                                   [exc("lesson", t(9, 50), t(10, 40), ["instagram"],
                                        lesson_id=2)]))
    state = status_of(policy, 1, t(9, 10))
    assert state.blocked == {"instagram": t(9, 50), "tiktok": t(10, 40), "youtube": t(10, 40)}
    later = status_of(policy, 1, t(10))
    assert later.blocked == {"tiktok": t(10, 40), "youtube": t(10, 40)}
    assert later.allowed == {"instagram": None} and later.lesson_until == t(10, 40)


def test_back_to_back_lessons_merge_into_one_block():
    claims = compile_policy(inputs([lesson(2, t(9, 20), t(10, 10)),
                                    lesson(1, t(8, 30), t(9, 20))]))
    assert blocks(claims) == [(z(8, 30), z(10, 10), ALL)]


def test_a_break_between_lessons_leaves_a_gap():
    claims = compile_policy(inputs([lesson(1, t(9, 20), t(10, 10)),
                                    lesson(2, t(10, 30), t(11, 20))]))
    assert blocks(claims) == [(z(9, 20), z(10, 10), ALL), (z(10, 30), z(11, 20), ALL)]


def test_blocks_are_clipped_to_the_window():
    claims = compile_policy(inputs([lesson(1, t(7), t(9)), lesson(2, t(11), t(13)),
                                    lesson(3, t(5), t(6))], window=(t(8), t(12))))
    assert blocks(claims) == [(z(8), z(9), ALL), (z(11), z(12), ALL)]


def test_cancelled_lesson_blocks_nothing():
    claims = compile_policy(inputs([lesson(1, t(9), t(10), cancelled=True)]))
    assert blocks(claims) == []


def test_lessons_in_rooms_of_other_segments_do_not_block_here():
    segments = [SegmentInput(1, "a", ("10.20.1.0/24",), (1,)),
                SegmentInput(2, "b", ("10.20.2.0/24", "fd00:20:2::/64"), (2, 3))]
    claims = compile_policy(inputs([lesson(1, t(9), t(10), room=3)], segments=segments))
    assert blocks(claims, 1) == []
    assert blocks(claims, 2) == [(z(9), z(10), ALL)]
    assert claims.segments[1].cidrs == ("10.20.2.0/24", "fd00:20:2::/64")


def test_overlapping_lessons_of_a_multi_room_segment_are_united():
    segments = [SegmentInput(1, "wifi-wing", ("10.20.0.0/22",), (1, 2))]
    claims = compile_policy(inputs(
        [lesson(1, t(9), t(10), room=1), lesson(2, t(9, 30), t(11), room=2)],
        exceptions=[exc("lesson", t(9), t(10), ["youtube"], lesson_id=1)], segments=segments))
    # Lesson 1 allows YouTube, but lesson 2 in the other room of the segment still blocks it.
    assert blocks(claims) == [(z(9), z(9, 30), ["instagram", "tiktok"]), (z(9, 30), z(11), ALL)]


@pytest.mark.parametrize("exception, expected", [
    (exc("lesson", t(9), t(10), lesson_id=1), [(z(10), z(11), ALL)]),
    (exc("lesson", t(10), t(11), lesson_id=2), [(z(9), z(10), ALL)]),
    (exc("room", t(9), t(12), room_id=1), []),
    (exc("room", t(9), t(12), room_id=2), [(z(9), z(11), ALL)]),
    (exc("group", t(9), t(12), group_id=20), [(z(9), z(10), ALL)]),
    (exc("group", t(9), t(12), group_id=30), [(z(9), z(11), ALL)]),
    (exc("school", t(9, 30), t(10, 30)), [(z(9), z(9, 30), ALL), (z(10, 30), z(11), ALL)]),
], ids=["lesson", "other-lesson", "room", "other-room", "group", "other-group", "school"])
def test_exception_of_each_scope_covers_what_it_names(exception, expected):
    timetable = [lesson(1, t(9), t(10), groups=(10,)), lesson(2, t(10), t(11), groups=(20, 21))]
    assert blocks(compile_policy(inputs(timetable, [exception]))) == expected


def test_subset_exception_leaves_the_other_services_blocked():
    claims = compile_policy(inputs([lesson(1, t(9), t(10))],
                                   [exc("lesson", t(9, 15), t(10), ["youtube"], lesson_id=1)]))
    assert blocks(claims) == [(z(9), z(9, 15), ALL), (z(9, 15), z(10), ["instagram", "tiktok"])]


def test_exceptions_of_several_scopes_add_up():
    claims = compile_policy(inputs([lesson(1, t(9), t(10))], [
        exc("lesson", t(9), t(10), ["youtube"], lesson_id=1),
        exc("group", t(9, 30), t(10), ["tiktok"], group_id=10),
        exc("school", t(9, 45), t(12), ["instagram"]),
    ]))
    assert blocks(claims) == [(z(9), z(9, 30), ["instagram", "tiktok"]),
                              (z(9, 30), z(9, 45), ["instagram"])]


def test_revoked_exception_stops_at_revocation():
    claims = compile_policy(inputs([lesson(1, t(9), t(10))], [
        exc("lesson", t(9), t(10), lesson_id=1, revoked_at=t(9, 20))]))
    assert blocks(claims) == [(z(9, 20), z(10), ALL)]


def test_exception_revoked_before_it_started_allows_nothing():
    claims = compile_policy(inputs([lesson(1, t(9), t(10))], [
        exc("school", t(9, 30), t(10), revoked_at=t(8))]))
    assert blocks(claims) == [(z(9), z(10), ALL)]


def test_school_setting_limits_the_blocked_services():
    claims = compile_policy(inputs([lesson(1, t(9), t(10))], blocked=frozenset({"tiktok", "nope"})))
    assert blocks(claims) == [(z(9), z(10), ["tiktok"])]
    assert list(claims.services) == ["tiktok"]


def test_exception_for_a_service_the_school_does_not_block_changes_nothing():
    claims = compile_policy(inputs([lesson(1, t(9), t(10))],
                                   [exc("lesson", t(9), t(10), ["youtube"], lesson_id=1)],
                                   blocked=frozenset({"tiktok"})))
    assert blocks(claims) == [(z(9), z(10), ["tiktok"])]


def test_school_that_blocks_nothing_gets_no_blocks():
    claims = compile_policy(inputs([lesson(1, t(9), t(10))], blocked=frozenset()))
    assert blocks(claims) == [] and claims.services == {}


def test_version_is_a_content_hash_independent_of_input_order():
    timetable = [lesson(1, t(9), t(10)), lesson(2, t(11), t(12), room=2)]
    segments = [SegmentInput(1, "a", ("10.20.1.0/24",), (1,)),
                SegmentInput(2, "b", ("10.20.2.0/24",), (2,))]
    one = compile_policy(inputs(timetable, segments=segments))
    two = compile_policy(inputs(timetable[::-1], segments=segments[::-1]))
    assert one == two
    assert one.version == content_version(one)
    moved = compile_policy(inputs([lesson(1, t(9), t(10, 5)), timetable[1]], segments=segments))
    assert moved.version != one.version


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        compile_policy(inputs([lesson(1, datetime(2026, 11, 23, 9), t(10))]))


def test_window_must_not_be_empty():
    with pytest.raises(ValueError, match="window"):
        compile_policy(inputs(window=(t(9), t(9))))


@pytest.mark.parametrize("at, blocked, allowed", [
    (t(8, 59), {}, {"instagram": t(9), "tiktok": t(9), "youtube": t(9, 30)}),
    (t(9), {"instagram": t(10), "tiktok": t(10)}, {"youtube": t(9, 30)}),
    (t(9, 29), {"instagram": t(10), "tiktok": t(10)}, {"youtube": t(9, 30)}),
    (t(9, 30), {"instagram": t(10), "tiktok": t(10), "youtube": t(10)}, {}),
    (t(10), {}, {"instagram": None, "tiktok": None, "youtube": None}),
])
def test_status_of_reads_each_service_until_its_chain_of_blocks_ends(at, blocked, allowed):
    policy = compile_policy(inputs([lesson(1, t(9), t(10))],
                                   [exc("lesson", t(9), t(9, 30), ["youtube"], lesson_id=1)]))
    state = status_of(policy, 1, at)
    assert (state.blocked, state.allowed) == (blocked, allowed)


def test_an_allowed_service_is_open_until_it_is_blocked_again_at_most_until_the_lessons_end():
    policy = compile_policy(inputs([lesson(1, t(9), t(10)), lesson(2, t(10), t(11))], [
        exc("lesson", t(9), t(9, 30), ["youtube"], lesson_id=1),
        exc("lesson", t(10), t(11), ["instagram"], lesson_id=2)]))
    assert status_of(policy, 1, t(9, 10)).allowed_until("youtube") == t(9, 30)
    assert status_of(policy, 1, t(10, 5)).allowed_until("instagram") == t(11)  # none after
    assert status_of(policy, 1, t(8, 59)).allowed_until("tiktok") == t(9)  # outside a lesson
    assert status_of(policy, 1, t(11)).allowed_until("tiktok") is None


def test_a_compile_takes_over_the_segments_of_the_previous_policy_that_did_not_change():
    two = (SegmentInput(1, "lokaal-1", ("10.20.1.0/24",), (1,)),
           SegmentInput(2, "lokaal-2", ("10.20.2.0/24",), (2,)))
    lessons = [lesson(1, t(9), t(10), room=1), lesson(2, t(9), t(10), room=2)]
    before = compile_policy(inputs(lessons, segments=two))
    moved = [lessons[0], lesson(2, t(9), t(10, 5), room=2)]
    after = compile_policy(inputs(moved, segments=two), before)
    assert after.segments[0] is before.segments[0]  # room 1: nothing changed
    assert after.segments[1] is not before.segments[1]
    assert intervals(after, 2) == [(t(9), t(10, 5), ALL)]
    # The same document as compiling afresh; a renamed segment is not taken over.
    assert after.version == compile_policy(inputs(moved, segments=two)).version
    renamed = (two[0]._replace(name="lokaal-1a"), two[1])
    assert compile_policy(inputs(moved, segments=renamed), after).segments[0].name == "lokaal-1a"
    # Another catalog gives the masks other meanings: nothing is taken over.
    fewer = compile_policy(inputs(moved, segments=two, blocked=["tiktok", "youtube"]), after)
    assert fewer.segments[0] is not after.segments[0]
    assert intervals(fewer, 1) == [(t(9), t(10), ["tiktok", "youtube"])]


def test_blocks_are_datetimes():
    policy = compile_policy(inputs([lesson(1, t(9), t(10))],
                                   [exc("lesson", t(9), t(9, 30), ["youtube"], lesson_id=1)]))
    assert intervals(policy) == [(t(9), t(9, 30), ["instagram", "tiktok"]),
                                 (t(9, 30), t(10), ALL)]


def test_status_of_unknown_segment_is_a_key_error():
    with pytest.raises(KeyError):
        status_of(compile_policy(inputs()), 99, t(9))


# --- From the database -------------------------------------------------------------------------

def _gateway_with_lessons(now: datetime):
    school = db.session.scalar(select(School).where(School.slug == "test"))
    gateway = create_gateway(school, "gw-1", actor="pytest")
    add_segment(school, gateway, "lokaal-1", ["10.20.1.0/24", "fd00:20:1::/64"], ["1.01"],
                actor="pytest")
    add_segment(school, gateway, "lokaal-2", ["10.20.2.0/24"], ["1.02"], actor="pytest")
    other_gateway = create_gateway(school, "gw-2", actor="pytest")
    add_segment(school, other_gateway, "gym", ["10.30.0.0/24"], ["gym"], actor="pytest")
    rooms = {r.code: r for r in db.session.scalars(select(Room).where(Room.school_id == school.id))}
    group = Group(school_id=school.id, name="3havo-b")
    db.session.add(group)

    def add(source_id, start, end, room, cancelled=False):
        db.session.add(Lesson(school_id=school.id, start=start, end=end, source="manual",
                              source_id=source_id, rooms=[rooms[room]], groups=[group],
                              cancelled=cancelled))
    add("now", now - timedelta(minutes=10), now + timedelta(minutes=40), "1.01")
    add("later", now + timedelta(hours=2), now + timedelta(hours=3), "1.02")
    add("cancelled", now + timedelta(hours=4), now + timedelta(hours=5), "1.02", cancelled=True)
    add("gym", now, now + timedelta(hours=1), "gym")
    add("past", now - timedelta(days=2), now - timedelta(days=2) + timedelta(hours=1), "1.01")
    add("beyond", now + timedelta(days=9), now + timedelta(days=9, hours=1), "1.01")
    db.session.flush()
    return school, gateway, rooms, group


NOW = datetime(2026, 11, 23, 9, 10, 30, tzinfo=timezone.utc)


def test_load_policy_inputs_reads_only_this_gateways_window(app):
    with app.app_context():
        school, gateway, rooms, group = _gateway_with_lessons(NOW)
        db.session.add(ExceptionGrant(school_id=school.id, scope="group", group_id=group.id,
                                      services=["youtube"], start=NOW,
                                      end=NOW + timedelta(hours=1)))
        db.session.add(ExceptionGrant(school_id=school.id, scope="school", services=None,
                                      start=NOW - timedelta(days=3),
                                      end=NOW - timedelta(days=2)))
        db.session.commit()
        loaded = load_policy_inputs(gateway, NOW)
        assert loaded.window == (datetime(2026, 11, 23, 9, tzinfo=timezone.utc),
                                 datetime(2026, 11, 30, 9, tzinfo=timezone.utc))
        assert loaded.issuer == "http://lesfocus.test"
        assert {s.name for s in loaded.segments} == {"lokaal-1", "lokaal-2"}
        assert len(loaded.lessons) == 2  # "now" and "later"; not cancelled, gym, past, beyond
        assert all(lesson.group_ids == (group.id,) for lesson in loaded.lessons)
        assert [e.scope for e in loaded.exceptions] == ["group"]
        assert loaded.blocked_services is None and "youtube" in loaded.services


def test_gateway_policy_is_signed_and_blocks_the_running_lesson(app):
    with app.app_context():
        school, gateway, rooms, group = _gateway_with_lessons(NOW)
        school.blocked_services = ["tiktok", "youtube"]
        db.session.add(ExceptionGrant(school_id=school.id, scope="group", group_id=group.id,
                                      services=["youtube"], start=NOW,
                                      end=NOW + timedelta(minutes=20)))
        db.session.commit()
        signed = gateway_policy(gateway, NOW)
        key = app.extensions["lesfocus.signing_key"]
        claims = key.verify_policy(signed.token(), gateway.id, now=NOW.timestamp())
        policy = parse_claims(claims)
        assert claims["ver"] == signed.version == content_version(policy)
        assert claims["iat"] == int(NOW.timestamp())
        assert claims["exp"] == int(datetime(2026, 11, 30, 9, tzinfo=timezone.utc).timestamp())
        segment = next(s for s in policy.segments if s.name == "lokaal-1")
        assert segment.cidrs == ("10.20.1.0/24", "fd00:20:1::/64")
        state = status_of(policy, segment.id, NOW)
        assert state.blocked == {"tiktok": NOW + timedelta(minutes=40)}
        assert state.allowed == {"youtube": NOW.replace(minute=30, second=30)}
        assert status_of(policy, segment.id, NOW + timedelta(minutes=25)).blocked == {
            "tiktok": NOW + timedelta(minutes=40), "youtube": NOW + timedelta(minutes=40)}
        # The first release's format says the same, with the same version.
        legacy = key.verify_policy(signed.token("1.0"), gateway.id, now=NOW.timestamp())
        assert "fmt" not in legacy and legacy["ver"] == signed.version
        assert status_of(parse_claims(legacy), segment.id, NOW) == state
        # Same database, later in the same hour: the same version.
        assert gateway_policy(gateway, NOW + timedelta(minutes=30)).version == signed.version


def test_a_room_exception_for_the_other_room_of_a_lesson_opens_it_here_too(app):
    """A lesson in a room of this gateway and in the gym (another gateway's room): an exception
    for the gym covers the lesson, so it opens here as well, read afresh or taken over after a
    grant (the loader reads the gym's lesson rooms only once an exception names the gym)."""
    with app.app_context():
        school, gateway, rooms, group = _gateway_with_lessons(NOW)
        db.session.add(Lesson(school_id=school.id, start=NOW, end=NOW + timedelta(hours=1),
                              source="manual", source_id="double",
                              rooms=[rooms["1.02"], rooms["gym"]]))
        db.session.commit()
        before = gateway_policy(gateway, NOW)
        assert before.inputs.rooms_read == {rooms["1.01"].id, rooms["1.02"].id}
        segment = next(s for s in before.policy.segments if s.name == "lokaal-2")
        assert "youtube" in status_of(before.policy, segment.id, NOW).blocked
        db.session.add(ExceptionGrant(school_id=school.id, scope="room", room_id=rooms["gym"].id,
                                      services=["youtube"], start=NOW,
                                      end=NOW + timedelta(minutes=30)))
        db.session.commit()
        after = gateway_policy(gateway, NOW, reuse=before.inputs)
        assert after.inputs.lessons is not before.inputs.lessons  # read again, gym included
        assert status_of(after.policy, segment.id, NOW).allowed == {
            "youtube": NOW + timedelta(minutes=30)}
        assert after.version == gateway_policy(gateway, NOW).version
        # A second grant for the gym takes the lessons over: what they need was read.
        db.session.add(ExceptionGrant(school_id=school.id, scope="room", room_id=rooms["gym"].id,
                                      services=["tiktok"], start=NOW,
                                      end=NOW + timedelta(minutes=30)))
        db.session.commit()
        again = gateway_policy(gateway, NOW, reuse=after.inputs)
        assert again.inputs.lessons is after.inputs.lessons
        assert set(status_of(again.policy, segment.id, NOW).allowed) == {"tiktok", "youtube"}


def test_the_policies_of_all_gateways_share_one_catalog_object(app):
    with app.app_context():
        school, gateway, rooms, group = _gateway_with_lessons(NOW)
        other = db.session.scalar(select(Gateway).where(Gateway.name == "gw-2"))
        first, second = gateway_policy(gateway, NOW), gateway_policy(other, NOW)
        assert first.inputs.services is second.inputs.services  # one per process, not per policy
        assert "youtube" in first.inputs.services


def test_after_a_grant_the_gateways_of_a_school_read_its_exceptions_once(app):
    from sqlalchemy import event

    from server.policy_cache import cached_policy
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        gateways = [create_gateway(school, f"gw-{n}", actor="pytest") for n in range(4)]
        db.session.commit()
        ids = [g.id for g in gateways]
        before = [cached_policy(i, school.id) for i in ids]
        db.session.add(ExceptionGrant(school_id=school.id, scope="school", services=["youtube"],
                                      start=NOW, end=NOW + timedelta(minutes=20)))
        db.session.commit()
        reads: list[str] = []

        def count(conn, cursor, statement, *args):
            if "FROM exceptions" in statement:
                reads.append(statement)
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            after = [cached_policy(i, school.id) for i in ids]
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(reads) == 1  # one read for the school, not one per gateway
        assert all(a is not b for a, b in zip(after, before))


def test_gateway_without_segments_gets_an_empty_valid_policy(app):
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        gateway = create_gateway(school, "gw-new", actor="pytest")
        db.session.commit()
        signed = gateway_policy(gateway, NOW)
        version, token = signed.version, signed.token()
        key = app.extensions["lesfocus.signing_key"]
        claims = key.verify_policy(token, gateway.id, now=NOW.timestamp())
        # Signed at NOW for the week from NOW: refused once that week is over.
        with pytest.raises(jwt.ExpiredSignatureError):
            key.verify_policy(token, gateway.id, now=(NOW + timedelta(days=8)).timestamp())
        assert claims["segments"] == [] and claims["ver"] == version
        assert set(claims["services"]) >= {"youtube", "tiktok", "instagram"}

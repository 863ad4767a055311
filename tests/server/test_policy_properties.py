"""Property tests: the compiled policy, read by the one reader, says exactly what SPEC §3 says.

The reference below evaluates the rule directly and naively for one instant, lesson by lesson,
sharing no code with the compiler or the reader; "until when" is found by stepping the reference
over every boundary of the inputs. The same holds for the policy as the agent reads it (both
document formats, through JSON).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from lesfocus_policy import parse_claims, status_of, to_claims
from server.policy import (ExceptionInput, LessonInput, PolicyInputs, SegmentInput, compile_policy)

BASE = datetime(2026, 11, 23, 7, tzinfo=timezone.utc)
SPAN_MINUTES = 12 * 60
SERVICES = ["facebook", "instagram", "tiktok", "youtube"]
CATALOG = {s: (s.title(), (f"{s}.com",)) for s in SERVICES}
ROOMS = [1, 2, 3, 4]
GROUPS = [10, 11, 12]
# Segments share no room here, but one segment serves two rooms (a wing's Wi-Fi).
SEGMENTS = (SegmentInput(1, "a", ("10.0.1.0/24",), (1,)),
            SegmentInput(2, "wing", ("10.0.2.0/24", "fd00:0:2::/64"), (2, 3)),
            SegmentInput(3, "empty", ("10.0.3.0/24",), ()))


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


@st.composite
def lessons(draw) -> list[LessonInput]:
    out = []
    for lesson_id in range(1, draw(st.integers(0, 12)) + 1):
        start = draw(st.integers(0, SPAN_MINUTES - 5))
        length = draw(st.integers(1, 120))
        out.append(LessonInput(
            lesson_id, at(start), at(start + length),
            tuple(draw(st.lists(st.sampled_from(ROOMS), min_size=1, max_size=2, unique=True))),
            tuple(draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True))),
            draw(st.booleans().map(lambda b: b and draw(st.integers(0, 4)) == 0))))
    return out


@st.composite
def exceptions(draw, lesson_count: int) -> list[ExceptionInput]:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        scope = draw(st.sampled_from(["lesson", "room", "group", "school"]))
        start = draw(st.integers(-30, SPAN_MINUTES))
        end = start + draw(st.integers(1, 180))
        revoked = draw(st.one_of(st.none(), st.integers(start - 30, end + 30)))
        services = draw(st.one_of(st.none(), st.lists(st.sampled_from(SERVICES + ["unknown"]),
                                                      min_size=1, max_size=3, unique=True)))
        out.append(ExceptionInput(
            scope,
            draw(st.integers(1, max(lesson_count, 1))) if scope == "lesson" else None,
            draw(st.sampled_from(ROOMS)) if scope == "room" else None,
            draw(st.sampled_from(GROUPS)) if scope == "group" else None,
            None if services is None else tuple(services), at(start), at(end),
            None if revoked is None else at(revoked)))
    return out


@st.composite
def policy_inputs(draw) -> PolicyInputs:
    timetable = draw(lessons())
    window_start = draw(st.integers(-60, 120))
    window_end = draw(st.integers(SPAN_MINUTES - 180, SPAN_MINUTES + 60))
    blocked = draw(st.one_of(st.none(), st.frozensets(st.sampled_from(SERVICES + ["gone"]))))
    return PolicyInputs(gateway_id="gw", issuer="lesfocus", timezone="Europe/Amsterdam",
                        window=(at(window_start), at(window_end)), services=CATALOG,
                        blocked_services=blocked, segments=SEGMENTS, lessons=tuple(timetable),
                        exceptions=tuple(draw(exceptions(len(timetable)))))


def reference_blocked(inputs: PolicyInputs, segment: SegmentInput, t: datetime) -> list[str]:
    """SPEC §3 evaluated literally at instant t."""
    if not inputs.window[0] <= t < inputs.window[1]:
        return []
    school_blocks = set(CATALOG) if inputs.blocked_services is None else (
        set(inputs.blocked_services) & set(CATALOG))
    blocked: set[str] = set()
    for lesson in inputs.lessons:
        if lesson.cancelled or not lesson.start <= t < lesson.end:
            continue
        if not set(lesson.room_ids) & set(segment.room_ids):
            continue
        for service in school_blocks:
            excepted = False
            for e in inputs.exceptions:
                stop = e.end if e.revoked_at is None else min(e.end, e.revoked_at)
                if not e.start <= t < stop:
                    continue
                covers = (e.scope == "school"
                          or (e.scope == "lesson" and e.lesson_id == lesson.id)
                          or (e.scope == "room" and e.room_id in lesson.room_ids)
                          or (e.scope == "group" and e.group_id in lesson.group_ids))
                if covers and (e.services is None or service in e.services):
                    excepted = True
            if not excepted:
                blocked.add(service)
    return sorted(blocked)


def reference_in_lesson(inputs: PolicyInputs, segment: SegmentInput, t: datetime) -> bool:
    """A non-cancelled lesson in a room of the segment runs at t (inside the window)."""
    return inputs.window[0] <= t < inputs.window[1] and any(
        not lesson.cancelled and lesson.start <= t < lesson.end
        and set(lesson.room_ids) & set(segment.room_ids) for lesson in inputs.lessons)


def boundaries(inputs: PolicyInputs) -> list[datetime]:
    """Every instant at which the reference's answer can change."""
    instants = set(inputs.window)
    for lesson in inputs.lessons:
        instants.update({lesson.start, lesson.end})
    for e in inputs.exceptions:
        instants.update(x for x in (e.start, e.end, e.revoked_at) if x is not None)
    return sorted(instants)


def reference_until(inputs: PolicyInputs, segment: SegmentInput, t: datetime, service: str,
                    blocked: bool) -> datetime | None:
    """The first boundary after t at which `service` is no longer (or, if not, first) blocked."""
    for b in boundaries(inputs):
        if b > t and (service in reference_blocked(inputs, segment, b)) != blocked:
            return b
    return None


@settings(max_examples=150, deadline=None)
@given(policy_inputs(), st.lists(st.integers(-90, SPAN_MINUTES + 90), min_size=1, max_size=25))
def test_the_reader_says_what_the_rule_says_with_every_end_time(inputs, minutes):
    policy = compile_policy(inputs)
    # Probe the given minutes and every boundary of the inputs (and a second either side).
    instants = {at(m) for m in minutes} | set(boundaries(inputs))
    probes = {i + d for i in instants for d in (timedelta(0), timedelta(seconds=-1),
                                                timedelta(seconds=1))}
    # What the agent reads: the signed documents' claims, through JSON, in both formats.
    read_v2 = parse_claims(json.loads(json.dumps(to_claims(policy))))
    read_v1 = parse_claims(json.loads(json.dumps(to_claims(policy, "1.0"))))
    for segment in SEGMENTS:
        for t in sorted(probes):
            state = status_of(policy, segment.id, t)
            expected = reference_blocked(inputs, segment, t)
            assert sorted(state.blocked) == expected, (segment.name, t)
            for service, until in state.blocked.items():
                assert until == reference_until(inputs, segment, t, service, True), (service, t)
            for service, next_block in state.allowed.items():
                assert next_block == reference_until(inputs, segment, t, service, False), (
                    service, t)
            assert state.in_lesson == reference_in_lesson(inputs, segment, t), (segment.name, t)
            assert status_of(read_v2, segment.id, t) == state
            assert status_of(read_v1, segment.id, t).blocked == state.blocked


@settings(max_examples=200, deadline=None)
@given(policy_inputs())
def test_blocks_are_sorted_disjoint_merged_and_inside_the_window(inputs):
    claims = to_claims(compile_policy(inputs), "1.0")
    window = claims["window"]
    for segment in claims["segments"]:
        previous = None
        for block in segment["blocks"]:
            assert window["start"] <= block["start"] < block["end"] <= window["end"]
            assert block["services"] and block["services"] == sorted(block["services"])
            assert set(block["services"]) <= set(claims["services"])
            if previous is not None:
                assert previous["end"] <= block["start"]
                # Adjacent blocks with the same services would have been merged.
                assert previous["end"] < block["start"] or previous["services"] != block[
                    "services"]
            previous = block


@settings(max_examples=100, deadline=None)
@given(policy_inputs(), st.randoms(use_true_random=False))
def test_version_depends_on_content_not_on_input_order(inputs, rng):
    lessons = list(inputs.lessons)
    excs = list(inputs.exceptions)
    rng.shuffle(lessons)
    rng.shuffle(excs)
    shuffled = PolicyInputs(**{**inputs.__dict__, "lessons": tuple(lessons),
                               "exceptions": tuple(excs)})
    assert compile_policy(shuffled).version == compile_policy(inputs).version

"""Segments: CIDR parsing and no overlaps behind one gateway (IPv4 and IPv6)."""

import pytest
from sqlalchemy import func, select

from server.extensions import db
from server.gateways import create_gateway
from server.models import AuditEvent, Room, School, Segment
from server.network import add_segment, parse_cidr


@pytest.mark.parametrize("text, expected", [
    ("10.1.2.0/24", "10.1.2.0/24"),
    (" 10.1.2.0/24 ", "10.1.2.0/24"),
    ("2001:db8:1::/64", "2001:db8:1::/64"),
    ("2001:DB8:0001::/64", "2001:db8:1::/64"),
    ("192.0.2.7/32", "192.0.2.7/32"),
])
def test_parse_cidr_normalises(text, expected):
    assert str(parse_cidr(text)) == expected


@pytest.mark.parametrize("text, fragment", [
    ("10.1.2.3/24", "host bits set"),
    ("10.1.2.0", "is not a network: write address/prefix"),
    ("10.1.2.0/33", "not a valid network"),
    ("300.1.2.0/24", "not a valid network"),
    ("2001:db8::1/64", "host bits set"),
    ("lokaal-2.14", "is not a network: write address/prefix"),
    ("", "is not a network: write address/prefix"),
])
def test_parse_cidr_rejects_with_reason(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_cidr(text)


def _school_and_gateway():
    school = db.session.scalar(select(School).where(School.slug == "test"))
    gateway = create_gateway(school, "gw-1", actor="pytest")
    return school, gateway


def test_add_segment_creates_rooms_and_audits(app):
    with app.app_context():
        school, gateway = _school_and_gateway()
        segment = add_segment(school, gateway, "Lokaal 2.14", ["10.20.14.0/24", "fd00:20:14::/64"],
                              ["2.14"], actor="pytest")
        db.session.commit()
        assert segment.cidr_strings == ["10.20.14.0/24", "fd00:20:14::/64"]
        assert [r.code for r in segment.rooms] == ["2.14"]
        assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "segment.create")) == 1


@pytest.mark.parametrize("cidrs, fragment", [
    (["10.20.14.128/25"], "overlaps 10.20.14.0/24 of segment A"),
    (["10.20.0.0/16"], "overlaps 10.20.14.0/24"),
    (["fd00:20:14:0:8000::/65"], "overlaps fd00:20:14::/64"),
    (["10.30.0.0/24", "10.30.0.0/25"], "in the same segment"),
    ([], "at least one network"),
])
def test_overlapping_cidrs_behind_one_gateway_are_refused(app, cidrs, fragment):
    with app.app_context():
        school, gateway = _school_and_gateway()
        add_segment(school, gateway, "A", ["10.20.14.0/24", "fd00:20:14::/64"], ["2.14"],
                    actor="pytest")
        db.session.commit()
        with pytest.raises(ValueError, match=fragment):
            add_segment(school, gateway, "B", cidrs, ["2.15"], actor="pytest")
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(Segment)) == 1
        assert db.session.scalar(select(Room).where(Room.code == "2.15")) is None


def test_same_cidr_behind_another_gateway_is_allowed(app):
    with app.app_context():
        school, gateway = _school_and_gateway()
        other = create_gateway(school, "gw-2", actor="pytest")
        add_segment(school, gateway, "A", ["10.20.14.0/24"], ["2.14"], actor="pytest")
        add_segment(school, other, "A", ["10.20.14.0/24"], ["3.01"], actor="pytest")
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(Segment)) == 2

"""Network segments: parsing CIDRs and keeping the segments behind one gateway disjoint."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Union

from sqlalchemy import select

from .extensions import db
from .fields import N_, FieldError
from .models import Gateway, Person, Room, School, Segment, SegmentCidr

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_cidr(text: str) -> Network:
    """Parse an IPv4 or IPv6 network; host bits must be zero. ValueError says what is wrong."""
    text = text.strip()
    if "/" not in text:
        raise FieldError("cidrs", N_("%(cidr)s is not a network: write address/prefix, such as "
                                     "10.1.2.0/24."), cidr=text[:60])
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        if "host bits set" in str(err):
            network = ipaddress.ip_network(text, strict=False)
            raise FieldError("cidrs", N_("%(cidr)s has host bits set: the network is "
                                         "%(network)s."), cidr=text, network=str(network)) \
                from None
        raise FieldError("cidrs", N_("%(cidr)s is not a valid network address or prefix."),
                         cidr=text[:60]) from None


def check_segment_cidrs(gateway_id: str, cidrs: Iterable[str],
                        ignore_segment_id: int | None = None) -> list[str]:
    """Validate `cidrs` for a segment behind `gateway_id`; return them normalised.

    Raises ValueError naming the CIDR that is invalid or that overlaps another CIDR of the same
    gateway (in this list or in another segment).
    """
    networks: list[Network] = []
    for text in cidrs:
        net = parse_cidr(text)
        for other in networks:
            if net.version == other.version and net.overlaps(other):
                raise FieldError("cidrs", N_("%(cidr)s overlaps %(other)s in the same segment."),
                                 cidr=str(net), other=str(other))
        networks.append(net)
    if not networks:
        raise FieldError("cidrs", N_("Give at least one network, such as 10.1.2.0/24."))
    rows = db.session.execute(
        select(SegmentCidr.cidr, Segment.name)
        .join(Segment, SegmentCidr.segment_id == Segment.id)
        .where(Segment.gateway_id == gateway_id)
        .where(Segment.id != (ignore_segment_id or -1)))
    for cidr_text, segment_name in rows:
        existing = ipaddress.ip_network(cidr_text)
        for net in networks:
            if net.version == existing.version and net.overlaps(existing):
                raise FieldError("cidrs", N_("%(cidr)s overlaps %(other)s of segment %(segment)s "
                                             "behind the same gateway."),
                                 cidr=str(net), other=str(existing), segment=segment_name)
    return [str(net) for net in networks]


def add_segment(school: School, gateway: Gateway, name: str, cidrs: list[str],
                room_codes: list[str], *, actor: Person | str) -> Segment:
    """Create a segment behind `gateway` serving rooms (created when new); audited.

    FieldError (a ValueError; nothing written) for a bad or overlapping CIDR, a duplicate name or
    no rooms.
    """
    from . import audit
    name = name.strip()
    if not name:
        raise FieldError("name", N_("A segment needs a name."))
    if len(name) > 100:
        raise FieldError("name", N_("At most %(n)d characters."), n=100)
    if gateway.school_id != school.id:
        raise FieldError("gateway", N_("This gateway belongs to another school."))
    if db.session.scalar(select(Segment).where(Segment.gateway_id == gateway.id,
                                               Segment.name == name)) is not None:
        raise FieldError("name", N_("Gateway %(gateway)s has a segment named %(name)s already."),
                         gateway=gateway.name, name=name)
    normalised = check_segment_cidrs(gateway.id, cidrs)
    codes = [c.strip() for c in room_codes if c.strip()]
    if not codes:
        raise FieldError("rooms", N_("A segment serves at least one room."))
    if any(len(code) > 64 for code in codes):
        raise FieldError("rooms", N_("A room code has at most %(n)d characters."), n=64)
    rooms = []
    for code in codes:
        room = db.session.scalar(select(Room).where(Room.school_id == school.id, Room.code == code))
        if room is None:
            room = Room(school_id=school.id, code=code)
            db.session.add(room)
        rooms.append(room)
    segment = Segment(school_id=school.id, gateway_id=gateway.id, name=name,
                      cidrs=[SegmentCidr(cidr=c) for c in normalised], rooms=rooms)
    db.session.add(segment)
    db.session.flush()
    audit.record("segment.create", school_id=school.id, actor=actor, object_type="segment",
                 object_id=segment.id, name=name, gateway=gateway.name, cidrs=normalised,
                 rooms=codes)
    return segment


"""The policy document: its claims in each format version, the strict parser, and the size limit.

Format 2.0 (what the server sends and the agent asks for):

    {"fmt": "2.0", "iss", "aud", "iat", "exp", "ver", "tz",
     "window": [start, end],                      # UTC epoch seconds
     "services": {id: {"name", "domains": [...]}},  # the services this school blocks, sorted by id
     "segments": [{"id", "name", "cidrs": [...], "b": [...]}]}

`b` holds the segment's blocks as a flat list of integers, three per block: the first block's start
(epoch seconds), its length, its service mask; then for every further block its gap after the
previous block's end, its length and its mask. Bit i of a mask is the i-th id of `services` in
sorted order; mask 0 is a lesson in which an exception allows every service. Blocks are sorted,
disjoint, inside the window, and adjacent blocks with the same mask are merged.
At 240 classrooms and a school week that is about 0.5 KiB per segment instead of 17 KiB in 1.0.

Format 1.0 (no `fmt` claim) is the first release's: ISO-8601 strings and service lists per block,
no mask-0 blocks. The server still writes it for agents that do not ask for 2 (rolling upgrade),
and the agent still reads it (an agent upgraded before its server).

`ver` is the content hash of the policy and does not depend on the format it is written in, so a
gateway's reported version means the same whichever format its agent reads.

A reader refuses an unknown major version (`UnsupportedFormat`) and ignores claims it does not know
(minor versions add claims, never change them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from .model import Block, Policy, PolicySegment, Service

FORMAT = "2.0"
LEGACY_FORMAT = "1.0"
SUPPORTED_MAJORS = (1, 2)
# The largest signed policy (compact JWS, in bytes) a server sends and an agent reads. Format 2
# needs about 0.7 KiB per classroom segment for a week, so this is room for some 10,000 segments;
# the server refuses to serve a larger one and tells IT (dashboard and log) instead.
MAX_POLICY_BYTES = 8 * 1024 * 1024
# What an agent reads of a policy answer: the JWS plus its small JSON envelope.
MAX_ANSWER_BYTES = MAX_POLICY_BYTES + 64 * 1024

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_MASK_SERVICES = 62  # masks stay within JSON's safe integers
# The most services one policy can name (the server's catalog sync refuses more).
MAX_SERVICES = _MAX_MASK_SERVICES


def is_domain_name(name: str) -> bool:
    """True when `name` is a domain as policies carry it: lower case, no trailing dot."""
    return bool(_DOMAIN.match(name))


class UnsupportedFormat(ValueError):
    """A policy in a format version this reader does not know."""


# --- small helpers ---------------------------------------------------------------------------

def _seconds(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} given where an aware UTC one is required")
    return int(value.timestamp())


class Instants(dict[int, datetime]):
    """Epoch second -> aware datetime, made once per distinct instant (lessons share bells)."""

    def __missing__(self, seconds: int) -> datetime:
        value = self[seconds] = datetime.fromtimestamp(seconds, timezone.utc)
        return value


def iso(seconds: int) -> str:
    """Epoch seconds as the 1.0 format writes them: UTC ISO-8601 with `Z`."""
    return time.strftime(ISO_FORMAT, time.gmtime(seconds))


def _format_major(claims: Mapping[str, Any]) -> int:
    fmt = claims.get("fmt", LEGACY_FORMAT)
    if not isinstance(fmt, str) or not re.fullmatch(r"\d{1,3}\.\d{1,3}", fmt):
        raise ValueError(f"fmt: expected a format version such as {FORMAT!r}, got {fmt!r}")
    major = int(fmt.split(".")[0])
    if major not in SUPPORTED_MAJORS:
        raise UnsupportedFormat(
            f"the policy is in format {fmt}, which this reader does not know (it reads "
            f"{', '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}); upgrade the agent")
    return major


# --- writing ---------------------------------------------------------------------------------

def _service_order(policy: Policy) -> list[str]:
    # dict order of `bit` below is this order too: _packed_blocks compares against it.
    order = sorted(policy.services)
    if len(order) > _MAX_MASK_SERVICES:
        raise ValueError(f"a policy can name at most {_MAX_MASK_SERVICES} services")
    return order


def _mask(services: frozenset[str], bit: Mapping[str, int]) -> int:
    mask = 0
    for service in services:
        mask |= bit[service]
    return mask


def _pack(intervals: Iterable[tuple[int, int, int]]) -> list[int]:
    """Sorted (start, end, mask) intervals as format 2.0's `b`: the first block's start, then
    each block's gap after the previous one's end; its length; its mask."""
    packed: list[int] = []
    previous_end: int | None = None
    for start, end, mask in intervals:
        packed += (start if previous_end is None else start - previous_end, end - start, mask)
        previous_end = end
    return packed


class SegmentMaker:
    """Makes the segments of one policy from (start, end, mask) epoch-second intervals.

    `order` names the bits of the masks (bit i is order[i], sorted ids as in format 2.0). The
    segments share their instants (lessons share bells) and mask sets, and keep their 2.0
    encoding, so writing the document does not pack them again. A segment of `previous` (the
    policy compiled before for the same gateway) is taken over as it is when its name, networks
    and blocks did not change: a timetable change in one room rebuilds one segment.
    """

    def __init__(self, order: list[str], previous: Policy | None = None) -> None:
        self.order = tuple(order)
        self.instants = Instants()
        self.masks = _Masks(list(order))
        self.previous = {} if previous is None else {s.id: s for s in previous.segments}

    def keep(self, segment_id: int, name: str, cidrs: tuple[str, ...]) -> PolicySegment | None:
        """The segment of `previous` as it is, if it has this name and these networks and was
        made with the same service order; for a caller that knows its blocks did not change."""
        old = self.previous.get(segment_id)
        packed = None if old is None else old.__dict__.get("_packed")
        if packed is None or packed[0] != self.order or old.name != name or old.cidrs != cidrs:
            return None
        return old

    def segment(self, segment_id: int, name: str, cidrs: tuple[str, ...],
                intervals: list[tuple[int, int, int]]) -> PolicySegment:
        """The segment; `intervals` sorted and disjoint."""
        packed = (self.order, _pack(intervals))
        old = self.previous.get(segment_id)
        if old is not None and old.__dict__.get("_packed") == packed and old.name == name \
                and old.cidrs == cidrs:
            return old
        made, masks = self.instants, self.masks
        blocks = tuple(Block(made[start], made[end], masks[mask])
                       for start, end, mask in intervals)
        segment = PolicySegment(segment_id, name, cidrs, blocks)
        object.__setattr__(segment, "_packed", packed)
        return segment


def _packed_blocks(segment: PolicySegment, bit: Mapping[str, int]) -> list[int]:
    cached = segment.__dict__.get("_packed")
    if cached is not None and cached[0] == tuple(bit):
        return cached[1]
    return _pack((_seconds(b.start), _seconds(b.end), _mask(b.services, bit))
                 for b in segment.blocks)


def _window(policy: Policy) -> tuple[int, int]:
    if policy.window is not None:
        return _seconds(policy.window[0]), _seconds(policy.window[1])
    return _seconds(policy.issued_at), _seconds(policy.expires_at)


def _body_v2(policy: Policy) -> dict[str, Any]:
    order = _service_order(policy)
    bit = {service: 1 << i for i, service in enumerate(order)}
    return {
        "iss": policy.issuer, "aud": policy.gateway_id, "tz": policy.timezone,
        "window": list(_window(policy)),
        "services": {s: {"name": policy.services[s].name,
                         "domains": list(policy.services[s].domains)} for s in order},
        "segments": [{"id": seg.id, "name": seg.name, "cidrs": list(seg.cidrs),
                      "b": _packed_blocks(seg, bit)} for seg in policy.segments],
    }


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_version(policy: Policy) -> str:
    """The content hash of a policy (SHA-256 of its canonical 2.0 body), whatever its format."""
    return hashlib.sha256(_canonical(_body_v2(policy))).hexdigest()


def to_claims(policy: Policy, fmt: str = FORMAT) -> dict[str, Any]:
    """The claims of `policy` in format `fmt` (all of them: iat and exp from the policy).

    `policy.version` must be its content hash (`content_version`); the compiler sets it.
    """
    major = _format_major({"fmt": fmt})
    times = {"iat": _seconds(policy.issued_at), "exp": _seconds(policy.expires_at)}
    if major == 2:
        return {"fmt": fmt, **_body_v2(policy), "ver": policy.version, **times}
    start, end = _window(policy)
    return {
        "iss": policy.issuer, "aud": policy.gateway_id, "tz": policy.timezone,
        "window": {"start": iso(start), "end": iso(end)},
        "services": {s: {"name": policy.services[s].name,
                         "domains": list(policy.services[s].domains)}
                     for s in sorted(policy.services)},
        "segments": [{"id": seg.id, "name": seg.name, "cidrs": list(seg.cidrs),
                      "blocks": [{"start": iso(_seconds(b.start)), "end": iso(_seconds(b.end)),
                                  "services": sorted(b.services)}
                                 for b in seg.blocks if b.services]}
                     for seg in policy.segments],
        "ver": policy.version, **times,
    }


# --- reading ---------------------------------------------------------------------------------

def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a non-empty string")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{where}: expected an integer")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object")
    return value


def _utc(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise ValueError(f"{where}: expected a UTC ISO-8601 time ending in Z, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise ValueError(f"{where}: not an ISO-8601 time: {value!r}") from None
    return parsed.astimezone(timezone.utc)


@lru_cache(maxsize=16384)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def _services(value: Any) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for sid, body in _object(value, "services").items():
        where = f"services.{sid}"
        body = _object(body, where)
        domains = []
        for n, domain in enumerate(_list(body.get("domains"), f"{where}.domains")):
            domain = _string(domain, f"{where}.domains[{n}]").lower().rstrip(".")
            if not _DOMAIN.match(domain):
                raise ValueError(f"{where}.domains[{n}]: not a domain name: {domain!r}")
            domains.append(domain)
        services[sid] = Service(id=_string(sid, where), name=_string(body.get("name"),
                                f"{where}.name"), domains=tuple(domains))
    return services


def _cidrs(value: Any, where: str) -> tuple[str, ...]:
    out = []
    for m, cidr in enumerate(_list(value, f"{where}.cidrs")):
        try:
            out.append(str(_network(_string(cidr, f"{where}.cidrs[{m}]"))))
        except ValueError:
            raise ValueError(f"{where}.cidrs[{m}]: not a CIDR: {cidr!r}") from None
    return tuple(out)


def _check_disjoint_networks(segments: list[PolicySegment]) -> None:
    """CIDRs of one gateway's segments never overlap (SPEC §3); sorted, so O(n log n)."""
    for version in (4, 6):
        nets = sorted((_network(c), f"segments[{n}].cidrs[{m}]")
                      for n, seg in enumerate(segments) for m, c in enumerate(seg.cidrs)
                      if _network(c).version == version)
        widest_end, widest = -1, ""
        for net, where in nets:
            start = int(net.network_address)
            if start <= widest_end:
                raise ValueError(f"{where}: {net} overlaps {widest}")
            end = int(net.broadcast_address)
            if end > widest_end:
                widest_end, widest = end, f"{where} ({net})"


def _ids(value: Any, where: str) -> tuple[int, str]:
    body = _object(value, where)
    return _int(body.get("id"), f"{where}.id"), _string(body.get("name"), f"{where}.name")


class _Masks(dict[int, frozenset[str]]):
    """Service mask -> the set of service ids it names, made once per distinct mask."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order
        self.limit = 1 << len(order)

    def __missing__(self, mask: int) -> frozenset[str]:
        value = self[mask] = frozenset(s for i, s in enumerate(self.order) if mask >> i & 1)
        return value


def _segment_heads(raw_segments: list[Any]) -> Iterator[tuple[str, dict[str, Any], int, str]]:
    """Each segment's place, body, id and name; ValueError for a bad or repeated id."""
    seen: set[int] = set()
    for n, body in enumerate(raw_segments):
        where = f"segments[{n}]"
        sid, name = _ids(body, where)
        if sid in seen:
            raise ValueError(f"{where}.id: segment {sid} appears twice")
        seen.add(sid)
        yield where, body, sid, name


def _blocks_v2(packed: Any, where: str, window: tuple[int, int], masks: _Masks,
               instants: Instants) -> tuple[Block, ...]:
    packed = _list(packed, f"{where}.b")
    if len(packed) % 3:
        raise ValueError(f"{where}.b: expected three integers per block, got {len(packed)}")
    blocks: list[Block] = []
    end = window[0]
    for k in range(0, len(packed), 3):
        gap, length, mask = packed[k], packed[k + 1], packed[k + 2]
        if type(gap) is not int or type(length) is not int or type(mask) is not int:
            raise ValueError(f"{where}.b[{k}:{k + 3}] (block {k // 3}): expected integers")
        if k and gap < 0:
            raise ValueError(f"{where}.b[{k}] (block {k // 3}): starts before the previous "
                             "block ends (blocks must be sorted and disjoint)")
        start = gap if k == 0 else end + gap
        if length <= 0:
            raise ValueError(f"{where}.b[{k + 1}] (block {k // 3}): length must be positive")
        end = start + length
        if start < window[0] or end > window[1]:
            raise ValueError(f"{where}.b[{k}] (block {k // 3}): outside the policy's window")
        if not 0 <= mask < masks.limit:
            raise ValueError(f"{where}.b[{k + 2}] (block {k // 3}): mask {mask} names a service "
                             "the policy does not list")
        blocks.append(Block(instants[start], instants[end], masks[mask]))
    return tuple(blocks)


def _blocks_v1(raw_blocks: Any, where: str, services: Mapping[str, Service]
               ) -> tuple[Block, ...]:
    blocks: list[Block] = []
    for m, raw in enumerate(_list(raw_blocks, f"{where}.blocks")):
        bwhere = f"{where}.blocks[{m}]"
        raw = _object(raw, bwhere)
        start, end = _utc(raw.get("start"), f"{bwhere}.start"), _utc(raw.get("end"),
                                                                     f"{bwhere}.end")
        if end <= start:
            raise ValueError(f"{bwhere}: end is not after start")
        if blocks and start < blocks[-1].end:
            raise ValueError(f"{bwhere}: starts before the previous block ends "
                             "(blocks must be sorted and disjoint)")
        names = _list(raw.get("services"), f"{bwhere}.services")
        for k, name in enumerate(names):
            if name not in services:
                raise ValueError(f"{bwhere}.services[{k}]: unknown service {name!r}")
        blocks.append(Block(start=start, end=end, services=frozenset(names)))
    return tuple(blocks)


def parse_claims(claims: Any, previous: Policy | None = None) -> Policy:
    """A Policy from verified claims, strictly; ValueError names the first bad field.

    UnsupportedFormat (a ValueError) for an unknown major format version. With `previous` (the
    policy in force), segments whose encoded form did not change are taken over without being
    read again: a grant in one classroom costs the reading of that classroom only.
    """
    claims = _object(claims, "claims")
    major = _format_major(claims)
    issuer = _string(claims.get("iss"), "iss")
    iat, exp = _int(claims.get("iat"), "iat"), _int(claims.get("exp"), "exp")
    if exp <= iat:
        raise ValueError("exp: not after iat")
    tz = _string(claims.get("tz"), "tz")
    version = _string(claims.get("ver"), "ver")
    gateway_id = _string(claims.get("aud"), "aud")
    services = _services(claims.get("services"))
    instants = Instants()
    raw_segments = _list(claims.get("segments"), "segments")
    segments: list[PolicySegment] = []
    if major == 2:
        raw_window = _list(claims.get("window"), "window")
        if len(raw_window) != 2:
            raise ValueError("window: expected [start, end]")
        window = (_int(raw_window[0], "window[0]"), _int(raw_window[1], "window[1]"))
        if window[1] < window[0]:
            raise ValueError("window: end before start")
        order = sorted(services)
        if len(order) > _MAX_MASK_SERVICES:
            raise ValueError(f"services: more than {_MAX_MASK_SERVICES}")
        masks = _Masks(order)
        reusable: dict[int, PolicySegment] = {}
        if previous is not None and previous.format.startswith("2.") \
                and sorted(previous.services) == order:
            reusable = {s.id: s for s in previous.segments}
        for where, body, sid, name in _segment_heads(raw_segments):
            old = reusable.get(sid)
            if old is not None and old.__dict__.get("_encoded") == (
                    name, body.get("cidrs"), body.get("b"), window):
                segments.append(old)
                continue
            segment = PolicySegment(id=sid, name=name, cidrs=_cidrs(body.get("cidrs"), where),
                                    blocks=_blocks_v2(body.get("b"), where, window, masks,
                                                      instants))
            object.__setattr__(segment, "_encoded", (name, body.get("cidrs"), body.get("b"),
                                                     window))
            segments.append(segment)
        window_times = (instants[window[0]], instants[window[1]])
    else:
        window_times = None
        if "window" in claims:
            raw_window = _object(claims["window"], "window")
            window_times = (_utc(raw_window.get("start"), "window.start"),
                            _utc(raw_window.get("end"), "window.end"))
            if window_times[1] < window_times[0]:
                raise ValueError("window: end before start")
        for where, body, sid, name in _segment_heads(raw_segments):
            segments.append(PolicySegment(id=sid, name=name, cidrs=_cidrs(body.get("cidrs"), where),
                                          blocks=_blocks_v1(body.get("blocks"), where, services)))
    _check_disjoint_networks(segments)
    return Policy(version=version, gateway_id=gateway_id,
                  issued_at=datetime.fromtimestamp(iat, timezone.utc),
                  expires_at=datetime.fromtimestamp(exp, timezone.utc), timezone=tz,
                  services=services, segments=tuple(segments),
                  format=str(claims.get("fmt", LEGACY_FORMAT)), issuer=issuer,
                  window=window_times)

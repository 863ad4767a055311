"""The OpenAPI 3.1 document of /api/v1, built from one table of operations (tested vs routes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Response, jsonify

from ..bounds import DATE_YEARS, MAX_ID, QUERY_TEXT_MAX
from . import bp

STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
STR_LIST = {"type": "array", "items": STR}


def text(max_len: int, **extra: Any) -> dict[str, Any]:
    """A string of at most `max_len` characters (longer is refused, naming the field)."""
    return {"type": "string", "maxLength": max_len, **extra}


def whole(minimum: int, maximum: int, **extra: Any) -> dict[str, Any]:
    """A whole number within its bounds."""
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


def texts(max_items: int, max_len: int, **extra: Any) -> dict[str, Any]:
    """A list of at most `max_items` strings of at most `max_len` characters."""
    return {"type": "array", "maxItems": max_items, "items": text(max_len), **extra}


ID = whole(1, MAX_ID)
# Query times: ISO 8601 within DATE_YEARS (server/bounds.py).
WHEN = {**TIME, "maxLength": 40,
        "description": f"ISO 8601, years {DATE_YEARS[0]} to {DATE_YEARS[1]}"}
GATEWAY_ID = text(36, description="gateway id (a UUID)")
ERROR = {"type": "object", "required": ["error", "message"],
         "properties": {"error": STR, "message": STR, "field": STR}}


def obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    """A JSON-schema object with `props`, refusing unknown members only by documentation."""
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def q(name: str, schema: dict[str, Any], description: str, *, required: bool = False,
      where: str = "query") -> dict[str, Any]:
    """A parameter."""
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


@dataclass(frozen=True)
class Operation:
    """One documented operation: method, path (OpenAPI template) and what it takes and answers."""

    method: str
    path: str
    summary: str
    security: str  # public, agent, user, teacher+leader, it_admin, leader+it_admin
    parameters: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    body_required: bool = True
    responses: dict[str, str] = field(default_factory=dict)




def pid(name: str) -> dict[str, Any]:
    """A whole-number id in the path."""
    return q(name, ID, "object id", required=True, where="path")


def qtext(name: str, description: str) -> dict[str, Any]:
    """A text query parameter with its QUERY_TEXT_MAX."""
    return q(name, text(QUERY_TEXT_MAX[name]), description)


_COUNTER = obj(["segment_id", "service", "hour", "count"], segment_id=ID, service=text(40),
               hour={**WHEN, "description": "UTC, on the hour"},
               count=whole(0, 2**31 - 1))

OPERATIONS: list[Operation] = [
    Operation("get", "/keys", "The server's policy-signing public keys (JWKS)", "public",
              responses={"200": "JWKS"}),
    Operation("get", "/openapi.json", "This document", "public", responses={"200": "OpenAPI"}),
    Operation("post", "/gateways/enroll", "Enrol an agent with a one-time token", "public",
              body=obj(["token", "public_key"], token=text(200),
                       public_key={"oneOf": [text(2000), {"type": "object", "maxProperties": 8}],
                                   "description": "Ed25519 public key as PEM or JWK"}),
              responses={"201": "{gateway_id, server_keys}", "400": "bad field",
                         "403": "token unknown, used or expired; gateway disabled, or enrolled "
                                "and the token is no re-enrolment token"}),
    Operation("get", "/gateways/self/policy", "The gateway's signed policy (long poll)", "agent",
              parameters=[q("wait", whole(0, 60), "seconds to wait for a change (at most 60; "
                            "more counts as 60)"),
                          q("format", {"enum": ["2"]}, "2 for the compact format 2.0; left out, "
                            "format 1.0 (agents of the first release)"),
                          q("If-None-Match", text(200), '"<version>" the agent has',
                            where="header")],
              responses={"200": "{version, policy}", "304": "unchanged within the wait",
                         "400": "unknown format",
                         "401": "agent token refused (also: gateway removed or disabled)",
                         "409": "a newer long poll of the same gateway replaced this one",
                         "503": "the policy would exceed the documented maximum size"}),
    Operation("post", "/gateways/self/heartbeat", "Agent state and hourly block counters", "agent",
              body=obj(None, policy_version=text(80), agent_version=text(40),
                       counters={"type": "array", "items": _COUNTER, "maxItems": 10000}),
              responses={"200": "recorded", "400": "bad field", "401": "agent token refused"}),
    Operation("get", "/gateways", "The school's gateways", "it_admin", responses={"200": "list"}),
    Operation("post", "/gateways", "Create a gateway; returns its one-time enrolment token",
              "it_admin", body=obj(["name"], name=text(100)),
              responses={"201": "{gateway, enrollment_token}", "400": "bad field"}),
    Operation("post", "/gateways/{gateway_id}/enrollment-token",
              "A new one-time enrolment token; for an enrolled gateway only with reenrol: true "
              "(its agent's key is then replaced by whoever uses the token; audited)", "it_admin",
              parameters=[q("gateway_id", GATEWAY_ID, "gateway id", required=True, where="path")],
              body=obj(None, reenrol={**BOOL, "default": False}), body_required=False,
              responses={"201": "{gateway, enrollment_token}", "404": "no such gateway",
                         "409": "enrolled already (send reenrol: true) or disabled"}),
    Operation("post", "/gateways/{gateway_id}/disable",
              "Disable a gateway: its agent tokens get 401, its segments are unenforced",
              "it_admin",
              parameters=[q("gateway_id", GATEWAY_ID, "gateway id", required=True, where="path")],
              body=obj(), body_required=False,
              responses={"200": "{gateway}", "404": "no such gateway"}),
    Operation("post", "/gateways/{gateway_id}/enable", "Put a disabled gateway back in service",
              "it_admin",
              parameters=[q("gateway_id", GATEWAY_ID, "gateway id", required=True, where="path")],
              body=obj(), body_required=False,
              responses={"200": "{gateway}", "404": "no such gateway"}),
    Operation("delete", "/gateways/{gateway_id}",
              "Remove a gateway with its segments, counters and tokens (rooms stay)", "it_admin",
              parameters=[q("gateway_id", GATEWAY_ID, "gateway id", required=True, where="path")],
              responses={"200": "{deleted, segments_deleted}", "404": "no such gateway"}),
    Operation("get", "/reminders", "Reminder texts for one audience and language", "public",
              parameters=[q("audience", {"enum": ["student", "staff"]}, "who reads them"),
                          q("lang", {"enum": ["nl", "en"]}, "language"),
                          qtext("school", "school slug (default: the only school)"),
                          q("If-None-Match", text(200), "ETag of a copy the client has",
                            where="header")],
              responses={"200": "{school, audience, lang, reminders}", "304": "unchanged"}),
    Operation("get", "/reminders/{reminder_id}", "One reminder with all its texts", "it_admin",
              parameters=[pid("reminder_id")],
              responses={"200": "reminder", "404": "not in your school"}),
    Operation("put", "/reminders/{reminder_id}", "Edit a reminder's texts or switch it off",
              "it_admin", parameters=[pid("reminder_id")],
              body=obj(None, texts=obj(None, nl=text(1000), en=text(1000)), enabled=BOOL),
              responses={"200": "reminder", "400": "bad field"}),
    Operation("get", "/lesson-status", "Lesson and block state of the caller's network", "public",
              parameters=[qtext("school", "limit the lookup to one school (needed where "
                                          "schools share a network)")],
              responses={"200": "{in_lesson, blocked_services, until, exception, services, "
                                "rooms[, ambiguous][, enforced: false when IT disabled the "
                                "segment's gateway]}", "404": "no such school"}),
    Operation("post", "/auth/token", "Username and password for a short-lived API token",
              "public", body=obj(["username", "password"], username=text(150), password=text(1024)),
              responses={"200": "{token, expires_at}", "401": "wrong username or password",
                         "403": "the person's school signs in with the school account only",
                         "429": "too many failures"}),
    Operation("get", "/lessons", "Lessons overlapping a time range", "user",
              parameters=[q("from", WHEN, "start (default: today 00:00 school time)"),
                          q("to", WHEN, "end (default: from + 1 day; at most 31 days)"),
                          qtext("room", "room code"), q("mine", BOOL, "only my lessons"),
                          q("limit", whole(1, 5000), "at most this many (more counts as 5000)")],
              responses={"200": "{from, to, lessons}"}),
    Operation("get", "/exceptions", "Exceptions, newest first", "user",
              parameters=[q("active", BOOL, "only those in force now"),
                          q("lesson", ID, "lesson id"), q("from", WHEN, "ending after"),
                          q("to", WHEN, "starting before"),
                          q("limit", whole(1, 1000), "at most (more counts as 1000)")],
              responses={"200": "{exceptions}"}),
    Operation("post", "/exceptions", "Grant an exception", "teacher+leader",
              body=obj(["scope"], scope={"enum": ["lesson", "room", "group", "school"]},
                       lesson_id=ID, room_id=ID, room=text(64), group_id=ID, group=text(64),
                       services={**texts(500, 40), "type": ["array", "null"]}, start=WHEN,
                       end=WHEN, minutes=whole(1, 60 * 24 * 366), reason=text(200)),
              responses={"201": "exception", "400": "bad field",
                         "403": "not allowed for this lesson or scope"}),
    Operation("delete", "/exceptions/{exception_id}", "Revoke an exception", "teacher+leader",
              parameters=[pid("exception_id")], body=obj(None, reason=text(200)),
              body_required=False,
              responses={"200": "exception", "403": "not yours", "404": "not in your school"}),
    Operation("get", "/rooms", "Rooms", "user", responses={"200": "{rooms}"}),
    Operation("post", "/rooms", "Add a room", "it_admin",
              body=obj(["code"], code=text(64), name=text(200)),
              responses={"201": "room", "409": "code taken"}),
    Operation("get", "/segments", "Network segments", "user", responses={"200": "{segments}"}),
    Operation("post", "/segments", "Add a segment behind a gateway", "it_admin",
              body=obj(["name", "gateway_id", "cidrs", "rooms"], name=text(100),
                       gateway_id=GATEWAY_ID, cidrs=texts(64, 64), rooms=texts(200, 64)),
              responses={"201": "segment", "400": "bad or overlapping CIDR (field cidrs[i])"}),
    Operation("delete", "/segments/{segment_id}", "Remove a segment", "it_admin",
              parameters=[pid("segment_id")],
              responses={"200": "{deleted}", "404": "not in your school"}),
    Operation("get", "/services", "Service catalog and the school's blocked services", "user",
              responses={"200": "{blocked, services}"}),
    Operation("put", "/services/blocked", "Set the services blocked during lessons", "it_admin",
              body=obj(["services"], services={**texts(500, 40), "type": ["array", "null"]}),
              responses={"200": "{blocked, services}", "400": "unknown service"}),
    Operation("get", "/audit", "Audit events, newest first", "leader+it_admin",
              parameters=[qtext("action", "e.g. exception.grant"),
                          qtext("object_type", "e.g. exception"), qtext("object_id", "id"),
                          qtext("actor", "username"), q("from", WHEN, "at or after"),
                          q("to", WHEN, "before"),
                          q("before", whole(0, 2**62), "events with smaller ids"),
                          q("limit", whole(1, 500), "at most 500 (more counts as 500)")],
              responses={"200": "{events, next_before}"}),
]

_SECURITY = {
    "public": [],
    "agent": [{"agentToken": []}],
}
_ROLES = {"user": "teacher, leader or it_admin", "teacher+leader": "teacher or leader",
          "it_admin": "it_admin", "leader+it_admin": "leader or it_admin"}


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, description in op.responses.items():
        entry: dict[str, Any] = {"description": description}
        if status.startswith(("4", "5")):
            entry["content"] = {"application/json": {"schema": ERROR}}
        elif status != "304":
            entry["content"] = {"application/json": {"schema": {"type": "object"}}}
        responses[status] = entry
    def error(status: str, description: str) -> None:
        responses.setdefault(status, {"description": description,
                                      "content": {"application/json": {"schema": ERROR}}})

    if op.body is not None or any(p["in"] in ("query", "path") for p in op.parameters):
        error("400", "bad field or parameter (`field` names it)")
    if op.body is not None:
        error("413", "body too large")
    if any(p["in"] == "path" for p in op.parameters) or any(
            p["name"] == "school" for p in op.parameters):
        error("404", "no such object in your school (or no such school)")
    if op.security == "agent":
        error("503", "LESFOCUS_PUBLIC_URL is not configured, or the server is overloaded")
    else:
        # A request that waited too long for a database connection (server/errors.py).
        error("503", "overloaded: try again after Retry-After")
    doc: dict[str, Any] = {"summary": op.summary, "operationId": f"{op.method}_{op.path}",
                           "responses": responses}
    if op.security in _ROLES:
        doc["security"] = [{"apiToken": []}]
        doc["description"] = f"Roles: {_ROLES[op.security]}. 401 without a token, 403 otherwise."
        responses.setdefault("401", {"description": "not signed in"})
        responses.setdefault("403", {"description": "wrong role"})
    else:
        doc["security"] = _SECURITY[op.security]
    if op.parameters:
        doc["parameters"] = op.parameters
    if op.body is not None:
        doc["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": op.body}}}
    return doc


@cache
def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document (paths relative to the server URL /api/v1)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "lesfocus API", "version": "1",
                 "description": "Errors are {error, message[, field]} JSON. See docs/api.md."},
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {"securitySchemes": {
            "agentToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "EdDSA JWT signed by the agent's key, lifetime <= 300 s"},
            "apiToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                         "description": "from POST /auth/token"}}},
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi_spec())

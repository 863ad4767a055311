"""The OpenAPI 3.1 document of /api/v1, built from one table of operations (tested vs routes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Response, jsonify

from . import bp

STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
STR_LIST = {"type": "array", "items": STR}
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
    return q(name, INT, "object id", required=True, where="path")


_COUNTER = obj(["segment_id", "service", "hour", "count"], segment_id=INT, service=STR,
               hour={**TIME, "description": "UTC, on the hour"},
               count={"type": "integer", "minimum": 0})

OPERATIONS: list[Operation] = [
    Operation("get", "/keys", "The server's policy-signing public keys (JWKS)", "public",
              responses={"200": "JWKS"}),
    Operation("get", "/openapi.json", "This document", "public", responses={"200": "OpenAPI"}),
    Operation("post", "/gateways/enroll", "Enrol an agent with a one-time token", "public",
              body=obj(["token", "public_key"], token=STR,
                       public_key={"oneOf": [STR, {"type": "object"}],
                                   "description": "Ed25519 public key as PEM or JWK"}),
              responses={"201": "{gateway_id, server_keys}", "400": "bad field",
                         "403": "token unknown, used or expired; gateway disabled, or enrolled "
                                "and the token is no re-enrolment token"}),
    Operation("get", "/gateways/self/policy", "The gateway's signed policy (long poll)", "agent",
              parameters=[q("wait", INT, "seconds to wait for a change (at most 60)"),
                          q("format", STR, "2 for the compact format 2.0; left out, format 1.0 "
                            "(agents of the first release)"),
                          q("If-None-Match", STR, '"<version>" the agent has', where="header")],
              responses={"200": "{version, policy}", "304": "unchanged within the wait",
                         "400": "unknown format",
                         "401": "agent token refused (also: gateway removed or disabled)",
                         "409": "a newer long poll of the same gateway replaced this one",
                         "503": "the policy would exceed the documented maximum size"}),
    Operation("post", "/gateways/self/heartbeat", "Agent state and hourly block counters", "agent",
              body=obj(None, policy_version=STR, agent_version=STR,
                       counters={"type": "array", "items": _COUNTER, "maxItems": 10000}),
              responses={"200": "recorded", "400": "bad field", "401": "agent token refused"}),
    Operation("get", "/gateways", "The school's gateways", "it_admin", responses={"200": "list"}),
    Operation("post", "/gateways", "Create a gateway; returns its one-time enrolment token",
              "it_admin", body=obj(["name"], name=STR),
              responses={"201": "{gateway, enrollment_token}", "400": "bad field"}),
    Operation("post", "/gateways/{gateway_id}/enrollment-token",
              "A new one-time enrolment token; for an enrolled gateway only with reenrol: true "
              "(its agent's key is then replaced by whoever uses the token; audited)", "it_admin",
              parameters=[q("gateway_id", STR, "gateway id", required=True, where="path")],
              body=obj(None, reenrol={**BOOL, "default": False}), body_required=False,
              responses={"201": "{gateway, enrollment_token}", "404": "no such gateway",
                         "409": "enrolled already (send reenrol: true) or disabled"}),
    Operation("post", "/gateways/{gateway_id}/disable",
              "Disable a gateway: its agent tokens get 401, its segments are unenforced",
              "it_admin",
              parameters=[q("gateway_id", STR, "gateway id", required=True, where="path")],
              body=obj(), body_required=False,
              responses={"200": "{gateway}", "404": "no such gateway"}),
    Operation("post", "/gateways/{gateway_id}/enable", "Put a disabled gateway back in service",
              "it_admin",
              parameters=[q("gateway_id", STR, "gateway id", required=True, where="path")],
              body=obj(), body_required=False,
              responses={"200": "{gateway}", "404": "no such gateway"}),
    Operation("delete", "/gateways/{gateway_id}",
              "Remove a gateway with its segments, counters and tokens (rooms stay)", "it_admin",
              parameters=[q("gateway_id", STR, "gateway id", required=True, where="path")],
              responses={"200": "{deleted, segments_deleted}", "404": "no such gateway"}),
    Operation("get", "/reminders", "Reminder texts for one audience and language", "public",
              parameters=[q("audience", {"enum": ["student", "staff"]}, "who reads them"),
                          q("lang", {"enum": ["nl", "en"]}, "language"),
                          q("school", STR, "school slug (default: the only school)"),
                          q("If-None-Match", STR, "ETag of a copy the client has",
                            where="header")],
              responses={"200": "{school, audience, lang, reminders}", "304": "unchanged"}),
    Operation("get", "/reminders/{reminder_id}", "One reminder with all its texts", "it_admin",
              parameters=[pid("reminder_id")],
              responses={"200": "reminder", "404": "not in your school"}),
    Operation("put", "/reminders/{reminder_id}", "Edit a reminder's texts or switch it off",
              "it_admin", parameters=[pid("reminder_id")],
              body=obj(None, texts=obj(None, nl=STR, en=STR), enabled=BOOL),
              responses={"200": "reminder", "400": "bad field"}),
    Operation("get", "/lesson-status", "Lesson and block state of the caller's network", "public",
              parameters=[q("school", STR, "limit the lookup to one school (needed where "
                                           "schools share a network)")],
              responses={"200": "{in_lesson, blocked_services, until, exception, services, "
                                "rooms[, ambiguous][, enforced: false when IT disabled the "
                                "segment's gateway]}", "404": "no such school"}),
    Operation("post", "/auth/token", "Username and password for a short-lived API token",
              "public", body=obj(["username", "password"], username=STR, password=STR),
              responses={"200": "{token, expires_at}", "401": "wrong username or password",
                         "403": "the person's school signs in with the school account only",
                         "429": "too many failures"}),
    Operation("get", "/lessons", "Lessons overlapping a time range", "user",
              parameters=[q("from", TIME, "start (default: today 00:00 school time)"),
                          q("to", TIME, "end (default: from + 1 day; at most 31 days)"),
                          q("room", STR, "room code"), q("mine", BOOL, "only my lessons"),
                          q("limit", INT, "at most this many")],
              responses={"200": "{from, to, lessons}"}),
    Operation("get", "/exceptions", "Exceptions, newest first", "user",
              parameters=[q("active", BOOL, "only those in force now"),
                          q("lesson", INT, "lesson id"), q("from", TIME, "ending after"),
                          q("to", TIME, "starting before"), q("limit", INT, "at most")],
              responses={"200": "{exceptions}"}),
    Operation("post", "/exceptions", "Grant an exception", "teacher+leader",
              body=obj(["scope"], scope={"enum": ["lesson", "room", "group", "school"]},
                       lesson_id=INT, room_id=INT, room=STR, group_id=INT, group=STR,
                       services={"type": ["array", "null"], "items": STR}, start=TIME, end=TIME,
                       minutes={"type": "integer", "minimum": 1}, reason=STR),
              responses={"201": "exception", "400": "bad field",
                         "403": "not allowed for this lesson or scope"}),
    Operation("delete", "/exceptions/{exception_id}", "Revoke an exception", "teacher+leader",
              parameters=[pid("exception_id")], body=obj(None, reason=STR), body_required=False,
              responses={"200": "exception", "403": "not yours", "404": "not in your school"}),
    Operation("get", "/rooms", "Rooms", "user", responses={"200": "{rooms}"}),
    Operation("post", "/rooms", "Add a room", "it_admin", body=obj(["code"], code=STR, name=STR),
              responses={"201": "room", "409": "code taken"}),
    Operation("get", "/segments", "Network segments", "user", responses={"200": "{segments}"}),
    Operation("post", "/segments", "Add a segment behind a gateway", "it_admin",
              body=obj(["name", "gateway_id", "cidrs", "rooms"], name=STR, gateway_id=STR,
                       cidrs=STR_LIST, rooms=STR_LIST),
              responses={"201": "segment", "400": "bad or overlapping CIDR (field cidrs[i])"}),
    Operation("delete", "/segments/{segment_id}", "Remove a segment", "it_admin",
              parameters=[pid("segment_id")],
              responses={"200": "{deleted}", "404": "not in your school"}),
    Operation("get", "/services", "Service catalog and the school's blocked services", "user",
              responses={"200": "{blocked, services}"}),
    Operation("put", "/services/blocked", "Set the services blocked during lessons", "it_admin",
              body=obj(["services"], services={"type": ["array", "null"], "items": STR}),
              responses={"200": "{blocked, services}", "400": "unknown service"}),
    Operation("get", "/audit", "Audit events, newest first", "leader+it_admin",
              parameters=[q("action", STR, "e.g. exception.grant"),
                          q("object_type", STR, "e.g. exception"), q("object_id", STR, "id"),
                          q("actor", STR, "username"), q("from", TIME, "at or after"),
                          q("to", TIME, "before"), q("before", INT, "events with smaller ids"),
                          q("limit", INT, "at most 500")],
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

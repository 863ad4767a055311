"""The OpenAPI document describes exactly the routes the app serves under /api/v1."""

from __future__ import annotations

import re

from server.api.openapi import openapi_spec

IMPLICIT = {"HEAD", "OPTIONS"}


def _served(app) -> set[tuple[str, str]]:
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        # Flask's /<int:name> becomes OpenAPI's /{name}, relative to the server URL /api/v1.
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
        for method in rule.methods - IMPLICIT:
            served.add((method.lower(), path))
    return served


def _documented(spec) -> set[tuple[str, str]]:
    return {(method, path) for path, item in spec["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_route_exists(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec == openapi_spec()
    served, documented = _served(app), _documented(spec)
    assert served - documented == set(), "routes missing from openapi.json"
    assert documented - served == set(), "openapi.json documents routes that do not exist"


def test_path_parameters_are_declared_for_every_templated_path(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, item in spec["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


def test_every_operation_documents_its_error_shape_and_security(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    schemes = set(spec["components"]["securitySchemes"])
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            for requirement in operation["security"]:
                assert set(requirement) <= schemes
            for status, response in operation["responses"].items():
                if status.startswith("4") and "content" in response:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["required"] == ["error", "message"]


def _unbounded(schema: dict, where: str) -> list[str]:
    """The places in `schema` where an input has no documented maximum."""
    if "oneOf" in schema:
        return [p for i, s in enumerate(schema["oneOf"]) for p in _unbounded(s, f"{where}|{i}")]
    if "enum" in schema:
        return []
    kind = schema.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    found = []
    if "string" in kinds and "maxLength" not in schema:
        found.append(where)
    if "integer" in kinds and "maximum" not in schema:
        found.append(where)
    if "array" in kinds:
        if "maxItems" not in schema:
            found.append(where)
        found += _unbounded(schema.get("items", {}), f"{where}[]")
    if "object" in kinds:
        properties = schema.get("properties", {})
        if not properties and "maxProperties" not in schema:
            found.append(where)
        for name, sub in properties.items():
            found += _unbounded(sub, f"{where}.{name}")
    return found


def test_every_input_field_has_a_documented_maximum(client):
    """Issue 13: bounds are part of the contract (server/bounds.py and the views' limits)."""
    spec = client.get("/api/v1/openapi.json").get_json()
    missing = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                missing += _unbounded(parameter["schema"],
                                      f"{method} {path} {parameter['name']}")
            body = operation.get("requestBody")
            if body:
                schema = body["content"]["application/json"]["schema"]
                if schema.get("properties"):
                    missing += _unbounded(schema, f"{method} {path} body")
    assert missing == []


QUERY_TEXTS = [("/api/v1/audit", "action", 64), ("/api/v1/audit", "actor", 200),
               ("/api/v1/lessons", "room", 64), ("/api/v1/lesson-status", "school", 64),
               ("/api/v1/reminders", "school", 64), ("/api/v1/audit", "from", 40)]


def test_a_query_text_past_its_documented_maximum_is_refused_naming_it(app, client):
    from tests.support.api import add_person, bearer
    add_person(app, "boss", "leader", "it_admin", "teacher")
    headers = bearer(client, "boss")
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, name, limit in QUERY_TEXTS:
        [parameter] = [p for p in spec["paths"][path.removeprefix("/api/v1")]["get"][
            "parameters"] if p["name"] == name]
        assert parameter["schema"]["maxLength"] == limit
        answer = client.get(path, query_string={name: "2026-01-01" + "x" * limit},
                            headers=headers)
        assert answer.status_code == 400 and answer.get_json()["field"] == name, (path, name)

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

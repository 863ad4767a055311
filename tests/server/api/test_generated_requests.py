"""Requests generated from the OpenAPI document: never a 5xx, always the JSON error shape, and a
refused request writes nothing (SPEC §5, "malformed input")."""

from __future__ import annotations

import json
import re
import string

import pytest
from tests.support.api import add_person, bearer, count_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.api.openapi import OPERATIONS
from server.models import (AuditEvent, EnrollmentToken, ExceptionGrant, Gateway, GatewayCounter,
                           Room, Segment)

TABLES = (AuditEvent, EnrollmentToken, ExceptionGrant, Gateway, GatewayCounter, Room, Segment)

scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(string.printable, max_size=30))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


def _bodies(schema: dict | None) -> st.SearchStrategy:
    """Bodies that mostly use the documented member names, with values of any JSON type."""
    names = list((schema or {}).get("properties", {}))
    if not names:
        return json_values
    return st.one_of(json_values, st.dictionaries(st.sampled_from(names), json_values,
                                                  max_size=len(names)))


def _path(template: str, data: st.DataObject) -> str:
    def fill(match: re.Match[str]) -> str:
        return str(data.draw(st.integers(0, 10**6) | st.text(string.ascii_letters, max_size=8)
                             .filter(bool)))
    return "/api/v1" + re.sub(r"{[^}]+}", fill, template)


OPERATIONS_UNDER_TEST = [op for op in OPERATIONS if op.method != "get" or op.parameters]


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS_UNDER_TEST,
                         ids=[f"{op.method} {op.path}" for op in OPERATIONS_UNDER_TEST])
def test_generated_requests_get_4xx_json_and_write_nothing(app, client, enrolled, operation):
    add_person(app, "it", "it_admin")
    add_person(app, "boss", "leader")
    agent = enrolled("gw", cidrs=["10.1.0.0/24"])
    role = {"leader+it_admin": "boss", "teacher+leader": "boss"}.get(operation.security, "it")

    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        headers = (agent.headers() if operation.security == "agent"
                   else {} if operation.security == "public" else bearer(client, role))
        query = {}
        for parameter in operation.parameters:
            if parameter["in"] == "query" and data.draw(st.booleans()):
                query[parameter["name"]] = data.draw(st.text(string.printable, max_size=20))
        query.pop("wait", None)  # a generated wait would only make the test slow
        before = [count_rows(app, table) for table in TABLES]
        body = data.draw(_bodies(operation.body)) if operation.body is not None else None
        response = client.open(_path(operation.path, data), method=operation.method.upper(),
                               headers={**headers, "Content-Type": "application/json"},
                               query_string=query,
                               data=None if body is None else json.dumps(body))
        assert response.status_code < 500, response.get_data(as_text=True)
        if response.status_code >= 400:
            error = response.get_json()
            assert {"error", "message"} <= set(error), error
            assert [count_rows(app, table) for table in TABLES] == before

    check()

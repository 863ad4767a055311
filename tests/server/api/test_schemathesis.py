"""schemathesis against /api/v1/openapi.json, as every role (issue 13): no 5xx, every status code
the server answers is documented, and a method a path does not document is 405 with `Allow`.

The cases come from the document itself (valid ones and ones that break it), sent in process
to the app (WSGI). Each role runs every operation: its own operations with more examples, the
others' with a few (their 401/403 must be documented too). Seeded (derandomize), so a run is
the same every time; about 30 s of one core per database.
"""

from __future__ import annotations

import re

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from server.api.openapi import OPERATIONS

from tests.support.api import add_person, bearer

# Which roles an operation's `security` names (server/api/openapi.py), to run them more.
OWN = {"public": {"anonymous"}, "agent": {"agent"}, "user": {"teacher", "leader", "it_admin"},
       "teacher+leader": {"teacher", "leader"}, "it_admin": {"it_admin"},
       "leader+it_admin": {"leader", "it_admin"}}
ROLES = ("anonymous", "teacher", "leader", "it_admin", "agent")
OWN_EXAMPLES, OTHER_EXAMPLES = 4, 1
METHODS = ("get", "put", "post", "delete", "patch")


def _security(label: str) -> str:
    method, path = label.split(" ", 1)
    for op in OPERATIONS:
        if op.method == method.lower() and op.path == path:
            return op.security
    raise AssertionError(f"{label} is not in OPERATIONS")


def test_schemathesis_finds_no_5xx_and_no_undocumented_status(app, client, enrolled):
    add_person(app, "docent", "teacher", teacher_code="DOC")
    add_person(app, "boss", "leader")
    add_person(app, "it", "it_admin")
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["1.01"])
    tokens = {"teacher": bearer(client, "docent"), "leader": bearer(client, "boss"),
              "it_admin": bearer(client, "it")}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {f"{op.method.upper()} {op.path}" for op in OPERATIONS}
    # schemathesis leaves out the document it was loaded from.
    assert {op.label for op in operations} == documented - {"GET /openapi.json"}
    failures: list[str] = []

    def headers_of(role: str) -> dict[str, str]:
        if role == "agent":
            return agent.headers()  # a new token per request, as the agent sends
        return {} if role == "anonymous" else dict(tokens[role])

    def run(role: str, operation) -> None:  # type: ignore[no-untyped-def]
        own = role in OWN[_security(operation.label)]
        strategy = (operation.as_strategy(GenerationMode.POSITIVE)
                    | operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=OWN_EXAMPLES if own else OTHER_EXAMPLES, deadline=None,
                  derandomize=True, database=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(headers=headers_of(role))
            try:
                case.validate_response(response, checks=[not_a_server_error,
                                                         status_code_conformance])
            except BaseException as err:  # noqa: BLE001 - FailureGroup is a BaseException
                failures.append(f"{role} {operation.label}: {response.status_code} "
                                f"{response.text[:200]} ({str(err).splitlines()[2:4]})")

        check()

    for role in ROLES:
        for operation in operations:
            run(role, operation)
    assert failures == []


def test_a_method_no_path_documents_is_405_with_allow(client):
    paths: dict[str, set[str]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, set()).add(op.method)
    wrong = []
    for path, documented in paths.items():
        url = "/api/v1" + path.replace("{gateway_id}", "x").replace("{reminder_id}", "1") \
            .replace("{exception_id}", "1").replace("{segment_id}", "1")
        for method in METHODS:
            # Documented here, or through a template that matches the path too (DELETE
            # /gateways/enroll is DELETE /gateways/{gateway_id} of a gateway named "enroll").
            if method in documented or any(
                    re.fullmatch(re.sub(r"{[^}]+}", "[^/]+", other), path)
                    for other, methods in paths.items() if other != path and method in methods):
                continue
            answer = client.open(url, method=method.upper())
            allow = {m.strip().lower() for m in answer.headers.get("Allow", "").split(",")}
            if answer.status_code != 405 or not documented <= allow:
                wrong.append(f"{method.upper()} {url}: {answer.status_code} "
                             f"Allow={answer.headers.get('Allow')!r}")
    assert wrong == []

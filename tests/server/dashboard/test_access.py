"""The authorization matrix: every dashboard route against every role, checked by the server."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
from flask import Flask

from tests.support.dashboard import csrf_token, sign_in

# A stand-in world for test ids and for matching paths to endpoints.
SAMPLE = SimpleNamespace(exception=1, gateway="gw", reminder=1, people={"docent": 1})
ROLES = ("anonymous", "niemand", "docent", "leiding", "ict")
TEACHER = {"docent"}
LEADER = {"leiding"}
IT = {"ict"}
SIGNED_IN = {"niemand", "docent", "leiding", "ict"}

# (method, path (given the world), form data, who may use it)
Route = tuple[str, Callable[..., str], dict[str, str], set[str]]
ROUTES: list[Route] = [
    ("GET", lambda w: "/nu", {}, TEACHER),
    ("GET", lambda w: "/week", {}, TEACHER),
    ("POST", lambda w: "/nu/grant", {"lesson_id": "OWN", "duration": "10"}, TEACHER | LEADER),
    ("POST", lambda w: f"/exceptions/{w.exception}/extend", {}, LEADER),
    ("POST", lambda w: f"/exceptions/{w.exception}/revoke", {}, LEADER),
    ("POST", lambda w: "/week/plan", {"lesson_id": "OWN", "duration": "10"}, TEACHER),
    ("GET", lambda w: "/leiding", {}, LEADER),
    ("POST", lambda w: "/leiding/uitzonderingen", {"scope": "school"}, LEADER),
    ("GET", lambda w: "/audit", {}, LEADER | IT),
    ("GET", lambda w: "/audit.csv", {}, LEADER | IT),
    ("GET", lambda w: "/it/lokalen/999999", {}, IT),
    ("POST", lambda w: "/it/lokalen/999999", {"action": "delete"}, IT),
    ("GET", lambda w: "/it/segmenten/999999", {}, IT),
    ("POST", lambda w: "/it/segmenten/999999", {"name": ""}, IT),
    ("POST", lambda w: f"/it/gateways/{w.gateway}/naam", {"name": ""}, IT),
    ("POST", lambda w: "/it/mensen/999999/verwijderen", {}, IT),
    ("GET", lambda w: "/it/lokalen", {}, IT),
    ("POST", lambda w: "/it/lokalen", {"code": ""}, IT),
    ("GET", lambda w: "/it/segmenten", {}, IT),
    ("POST", lambda w: "/it/segmenten", {"name": ""}, IT),
    ("POST", lambda w: "/it/segmenten/999999/verwijderen", {}, IT),
    ("GET", lambda w: "/it/gateways", {}, IT),
    ("POST", lambda w: "/it/gateways", {"name": ""}, IT),
    ("GET", lambda w: f"/it/gateways/{w.gateway}", {}, IT),
    ("POST", lambda w: f"/it/gateways/{w.gateway}/token", {}, IT),
    ("GET", lambda w: "/it/school", {}, IT),
    ("POST", lambda w: "/it/school", {"idle_minutes": "abc"}, IT),
    ("POST", lambda w: f"/it/gateways/{w.gateway}/uitschakelen", {}, IT),
    ("POST", lambda w: f"/it/gateways/{w.gateway}/inschakelen", {}, IT),
    # Without the ticked box nothing is removed (the routes after it still have the gateway).
    ("POST", lambda w: f"/it/gateways/{w.gateway}/verwijderen", {}, IT),
    ("GET", lambda w: "/it/rooster", {}, IT),
    ("POST", lambda w: "/it/rooster", {}, IT),
    ("GET", lambda w: "/it/rooster/999999", {}, IT),
    ("POST", lambda w: "/it/rooster/bronnen/999999/synchroniseren", {}, IT),
    ("GET", lambda w: "/it/rooster/bronnen/999999/verwijderen", {}, IT),
    ("POST", lambda w: "/it/rooster/bronnen/999999/verwijderen", {}, IT),
    ("GET", lambda w: "/it/diensten", {}, IT),
    ("POST", lambda w: "/it/diensten", {"services": "nonexistent"}, IT),
    ("GET", lambda w: "/it/herinneringen", {}, IT),
    ("GET", lambda w: f"/it/herinneringen/{w.reminder}", {}, IT),
    ("POST", lambda w: f"/it/herinneringen/{w.reminder}", {"action": "preview"}, IT),
    ("GET", lambda w: "/it/mensen", {}, IT),
    ("POST", lambda w: "/it/mensen", {}, IT),
    ("GET", lambda w: "/it/mensen/{}".format(w.people["docent"]), {}, IT),
    ("POST", lambda w: "/it/mensen/{}".format(w.people["docent"]), {}, IT),
    ("GET", lambda w: "/it/aanmelden", {}, IT),
    ("POST", lambda w: "/it/aanmelden", {"name": ""}, IT),
    ("POST", lambda w: "/it/aanmelden/999999/verwijderen", {}, IT),
    ("GET", lambda w: "/no-role", {}, SIGNED_IN),
]


# SQLite only: who may use a route does not depend on the database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _expected(role: str, allowed: set[str]) -> str:
    if role == "anonymous":
        return "sign-in"
    return "allowed" if role in allowed else "403"


def _observed(response) -> str:
    location = response.headers.get("Location", "")
    if response.status_code == 302 and "/login" in location:
        return "sign-in"
    if response.status_code == 403:
        return "403"
    return "allowed" if response.status_code not in (401, 403) else str(response.status_code)


# One client per role walks every route (signing in once keeps the slow password hash rare).
@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_the_role_as_the_matrix_says(app: Flask, world, role: str) -> None:
    client = app.test_client()
    if role != "anonymous":
        sign_in(client, role)
    token = csrf_token(client)
    wrong = []
    for method, path, data, allowed in ROUTES:
        url = path(world)
        form = {k: (str(world.own_lesson) if v == "OWN" else v) for k, v in data.items()}
        if method == "GET":
            response = client.get(url)
        else:
            response = client.post(url, data={**form, "csrf_token": token})
        expected, observed = _expected(role, allowed), _observed(response)
        if expected != observed:
            wrong.append(f"{method} {url}: expected {expected}, got {response.status_code} "
                         f"{response.headers.get('Location', '')}")
    assert wrong == []


def test_matrix_covers_every_dashboard_route_that_needs_a_role(app: Flask) -> None:
    adapter = app.url_map.bind("lesfocus.test")
    covered = {adapter.match(path(SAMPLE), method=method)[0] for method, path, _, _ in ROUTES}
    # No role needed by design: the start page, sign-in (with a password or the school
    # account), sign-out and the language switch.
    public = {"dashboard.index", "dashboard.login", "dashboard.logout", "dashboard.set_language",
              "dashboard.sso_start", "dashboard.sso_callback"}
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()
                 if rule.endpoint.startswith("dashboard.")}
    assert endpoints - public == covered
    for endpoint in covered:
        assert getattr(app.view_functions[endpoint], "roles", None) is not None, endpoint

"""Signing in with the school account in a real browser (issue 15, item 2).

Debian's Chromium (Playwright) against `lesfocus serve` on 127.0.0.1 and the certified
`oidc-provider` (tests/support/oidc) on 127.0.0.1: the teacher clicks "Inloggen met
Schoolaccount" on the real sign-in page (a screenshot of it goes to `screenshots/dashboard/`),
signs in at the provider, lands on "Nu"; signing out ends the lesfocus session and then the
provider's (RP-initiated logout), back on the sign-in page. Every request to an address other
than 127.0.0.1 (the provider's pages load a web font) is aborted by the browser context. The
negative cases run at the HTTP level in tests/server/dashboard/test_sso.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, RealProvider
from tests.support.realparts import require
from tests.support.served import ServedApp

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots" / "dashboard"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RealProvider]]:
    """lesfocus with one school, a teacher with an e-mail address and the provider added."""
    require(os.path.exists(CHROMIUM), "Debian's Chromium (/usr/bin/chromium)")
    from flask_migrate import upgrade

    from server.app import create_app
    from server.extensions import db
    from server.models import Person, School, SsoProvider
    from server.sso import set_client_secret

    tmp = tmp_path_factory.mktemp("sso-browser")
    settings = {"INSTANCE_PATH": str(tmp / "instance"),
                "DATABASE_URL": f"sqlite:///{tmp / 'sso.sqlite3'}",
                "SECRET_KEY": "sso-browser-test-secret"}
    app = create_app(settings)
    with app.app_context():
        upgrade()
        school = School(slug="lyceum", name="Het Lyceum", aliases=[])
        db.session.add(school)
        db.session.flush()
        db.session.add(Person(school_id=school.id, username="jansen", display_name="J. Jansen",
                              email="jansen@school.test", roles=["teacher"]))
        db.session.commit()
    served = ServedApp({f"LESFOCUS_{k}": v for k, v in settings.items()}, tmp / "serve.log")
    served.start()
    provider = None
    try:
        provider = RealProvider([served.url + "/login/sso/callback"],
                                [served.url + "/login"]).start()
        with app.app_context():
            row = SsoProvider(name="Schoolaccount", issuer=provider.issuer, client_id=CLIENT_ID,
                              username_claim="email", schools=[
                                  db.session.scalar(select(School))], client_secret="")
            db.session.add(row)
            set_client_secret(row, CLIENT_SECRET)
            db.session.commit()
        yield served.url, provider
    finally:
        if provider is not None:
            provider.stop()
        served.stop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "the playwright Python package")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, locale="nl-NL")

        def loopback_only(route: Any) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                route.abort()

        context.route("**/*", loopback_only)
        try:
            yield context
        finally:
            context.close()


def test_a_teacher_signs_in_and_out_with_the_school_account(sites: tuple[str, RealProvider],
                                                            browser: Any) -> None:
    url, provider = sites
    page = browser.new_page()
    page.goto(url + "/login")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "login-with-school-account.png"), full_page=True)
    page.get_by_role("link", name="Inloggen met Schoolaccount").click()
    page.wait_for_url(provider.issuer + "/interaction/**")
    page.locator("input[name=login]").fill("jansen")
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()  # the provider's consent
    page.wait_for_url(url + "/nu")
    assert "J. Jansen" in page.locator("header").inner_text()
    page.get_by_role("button", name="Uitloggen").click()
    # lesfocus ends its session, then hands over to the provider's end_session_endpoint.
    page.wait_for_url(provider.issuer + "/session/end**")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(url + "/login")
    page.goto(url + "/nu")
    assert urlsplit(page.url).path == "/login"  # signed out of lesfocus
    # Signed out at the provider too: a new sign-in asks for the login again.
    page.get_by_role("link", name="Inloggen met Schoolaccount").click()
    page.wait_for_url(provider.issuer + "/interaction/**")
    assert page.locator("input[name=login]").count() == 1

"""The dashboard in a real browser (Debian's Chromium via Playwright) against a live server.

The server is `lesfocus serve` (server/serving.py, as users run it) on 127.0.0.1 (ephemeral port)
with a temporary SQLite database holding the demo school of `lesfocus demo`, and a `lesfocus worker`
beside it for the timetable uploads. Screenshots of every
page at a desktop and a phone size are written to `screenshots/dashboard/` (git-ignored) for people to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots" / "dashboard"


from tests.support.realparts import require  # noqa: E402
from tests.support.served import ServedApp  # noqa: E402
from tests.support.worker_process import WorkerProcess  # noqa: E402


@dataclass
class Site:
    """The running server and what the tests need to know about its data."""

    url: str
    app: Any
    logins: dict[str, str]  # username -> password
    own_lesson: int  # demo.jans's lesson running now
    other_lesson: int  # demo.bakk's lesson running now


def _running_lesson(app: Any, username: str, room_code: str, source_id: str,
                    exclusive: bool = False) -> int:
    """The id of a lesson of `username` running now with at least 20 minutes to go.

    With `exclusive`, the teacher's other lessons running now are cancelled, so that the "Nu"
    page certainly shows this one (whatever the clock says about the demo's timetable).
    """
    from server.extensions import db
    from server.models import Lesson, Person, Room, lesson_teachers, utcnow

    with app.app_context():
        now = utcnow()
        person = db.session.scalar(select(Person).where(Person.username == username))
        running = db.session.scalars(
            select(Lesson).join(lesson_teachers, lesson_teachers.c.lesson_id == Lesson.id)
            .where(lesson_teachers.c.person_id == person.id, Lesson.start <= now,
                   Lesson.end > now, Lesson.cancelled.is_(False))).all()
        long_enough = [lesson for lesson in running
                       if lesson.end > now + timedelta(minutes=20)]
        if long_enough and not exclusive:
            return long_enough[0].id
        if exclusive:
            for lesson in running:
                lesson.cancelled = True
        room = db.session.scalar(select(Room).where(Room.school_id == person.school_id,
                                                    Room.code == room_code))
        lesson = Lesson(school_id=person.school_id, start=now - timedelta(minutes=5),
                        end=now + timedelta(minutes=45), subject="browsertest", source="manual",
                        source_id=source_id, rooms=[room], teachers=[person])
        db.session.add(lesson)
        db.session.commit()
        return lesson.id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The demo school served on 127.0.0.1 for the duration of this module."""
    require(os.path.exists(CHROMIUM), "Debian's Chromium (/usr/bin/chromium)")
    from flask_migrate import upgrade

    from server.app import create_app
    from server.demo import build_demo
    from server.extensions import db

    tmp = tmp_path_factory.mktemp("dashboard-browser")
    settings = {"INSTANCE_PATH": str(tmp / "instance"),
                "DATABASE_URL": f"sqlite:///{tmp / 'demo.sqlite3'}",
                "SECRET_KEY": "browser-test-secret"}
    app = create_app(settings)
    with app.app_context():
        upgrade()
        info = build_demo()
        db.session.commit()
    logins = {username: password for username, password, _role in info.logins}
    own = _running_lesson(app, "demo.jans", "0.01", "browser-own", exclusive=True)
    other = _running_lesson(app, "demo.bakk", "3.02", "browser-other")
    served = ServedApp({f"LESFOCUS_{k}": v for k, v in settings.items()}, tmp / "serve.log")
    worker = WorkerProcess({f"LESFOCUS_{k}": v for k, v in settings.items()}, tmp / "worker.log")
    served.start()
    worker.start()
    try:
        worker.wait_for(r"worker active")
        yield Site(url=served.url, app=app, logins=logins, own_lesson=own, other_lesson=other)
    finally:
        worker.stop()
        served.stop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (desktop size); closed after the test."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "the playwright Python package")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=[*CHROMIUM_FLAGS, "--lang=nl"], viewport=DESKTOP, locale="nl-NL",
            # Chromium's own controls (date pickers, validation bubbles) in Dutch too.
            env={**os.environ, "LANGUAGE": "nl", "LANG": "nl_NL.UTF-8"})
        try:
            yield context
        finally:
            context.close()


def _sign_in(page: Any, site: Site, username: str) -> None:
    page.goto(site.url + "/login")
    page.get_by_label("Gebruikersnaam").fill(username)
    page.get_by_label("Wachtwoord").fill(site.logins[username])
    page.get_by_role("button", name="Inloggen").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:500]


def _shoot(page: Any, name: str) -> None:
    """Screenshots of the current page at desktop (1366×768) and phone (390×844) size."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


# On a phone: the signed-in name is shown, the current tab lies inside the tab bar's view, and a
# table that scrolls sideways says so under it.
PHONE_HEADER = """() => {
  const who = document.querySelector('.top .who');
  const tabs = document.querySelector('.tabs');
  const current = tabs && tabs.querySelector('[aria-current="page"]');
  const inView = (el, box) => { const r = el.getBoundingClientRect(), b = box.getBoundingClientRect();
                                return r.left >= b.left - 1 && r.right <= b.right + 1; };
  const wraps = [...document.querySelectorAll('.table-wrap')];
  return {
    who: who ? who.getBoundingClientRect().width > 20 && getComputedStyle(who).display !== 'none' : null,
    tab: current ? inView(current, tabs) : null,
    scrolling: wraps.filter(w => w.scrollWidth > w.clientWidth + 2).length,
    hinted: wraps.filter(w => w.scrollWidth > w.clientWidth + 2 && w.previousElementSibling
                         && w.previousElementSibling.classList.contains('scroll-hint')
                         && w.previousElementSibling.offsetHeight > 0).length,
  };
}"""


# The parts of "Nu" a teacher needs at the start of a lesson: all on a phone's first screen.
FIRST_SCREEN = """() => {
  const parts = {lesson: '#lesson-title', state: '.lesson .state',
                 rest: 'button[value=rest]', m10: 'button[value="10"]', m30: 'button[value="30"]'};
  const out = {scrollY: window.scrollY, height: window.innerHeight};
  for (const [name, sel] of Object.entries(parts)) {
    const r = document.querySelector(sel).getBoundingClientRect();
    out[name] = [Math.round(r.top), Math.round(r.bottom)];
  }
  return out;
}"""


def _assert_first_screen(page: Any, name: str) -> None:
    """At 390×844, unscrolled: lesson, state and the duration buttons are in view (and a PNG)."""
    page.set_viewport_size(PHONE)
    page.evaluate("window.scrollTo(0, 0)")
    boxes = page.evaluate(FIRST_SCREEN)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-phone-first-screen.png"))
    page.set_viewport_size(DESKTOP)
    outside = {part: box for part, box in boxes.items() if isinstance(box, list)
               and not (0 <= box[0] and box[1] <= boxes["height"])}
    assert boxes["scrollY"] == 0 and not outside, boxes


def test_teacher_grants_only_youtube_for_15_minutes_sees_the_countdown_and_revokes(
        site: Site, browser: Any) -> None:
    page = browser.new_page()
    _sign_in(page, site, "demo.jans")
    assert page.url.endswith("/nu")
    _assert_first_screen(page, "teacher-now")
    page.locator("label.chip", has_text="YouTube").click()  # the chip: tap one
    assert page.get_by_role("checkbox", name="YouTube").is_checked()
    page.get_by_role("button", name="15 min").click()  # the duration: tap two
    page.wait_for_load_state()
    # The message says what holds now, per service (read from the policy after the grant).
    message = page.locator("p.flash").inner_text()
    assert message.startswith("Uitzondering toegekend. Nu: "), message
    assert "Alle behalve YouTube geblokkeerd tot" in message and "YouTube toegestaan tot" in message
    countdown = page.locator("time.countdown").first
    first = countdown.inner_text()
    assert re.fullmatch(r"1[45]:\d\d", first), first
    page.wait_for_timeout(1500)
    assert countdown.inner_text() != first  # it ticks
    section = page.locator("ul.exceptions li").first
    assert "YouTube" in section.inner_text()
    _assert_first_screen(page, "teacher-now-with-exception")
    _shoot(page, "teacher-now-with-exception")
    section.get_by_role("button", name="+5 min").click()
    page.wait_for_load_state()
    assert page.locator("p.flash").inner_text().startswith("Uitzondering verlengd tot ")
    assert re.fullmatch(r"(19|20):\d\d", page.locator("time.countdown").first.inner_text())
    page.locator("ul.exceptions li").first.get_by_role("button", name="Stoppen").click()
    page.wait_for_load_state()
    assert page.locator("p.flash").inner_text().startswith("Uitzondering gestopt. Nu: ")
    assert page.locator("time.countdown").count() == 0
    _shoot(page, "teacher-now")
    # A later lesson of this week, from the week view (when one is left this week).
    page.goto(site.url + "/week")
    plan = page.locator("details.plan").first
    if plan.count():
        # The lesson it plans for: earlier lessons of today may show exceptions of their own (the
        # demo's, with "Stoppen" once they have begun), so the one to cancel is found in it.
        lesson = plan.locator("xpath=ancestor::li[1]").get_attribute("id")
        plan.locator("summary").click()
        plan.locator("label.chip", has_text="YouTube").click()
        plan.get_by_role("button", name="Eerste 10 min").click()
        page.wait_for_load_state()
        message = page.locator("p.flash").inner_text()
        assert message.startswith("Uitzondering gepland voor "), message
        assert "YouTube toegestaan tot" in message, message
        _shoot(page, "teacher-week-planned")
        page.locator(f"li#{lesson} div.planned").first.get_by_role(
            "button", name="Annuleren").click()
        page.wait_for_load_state()
        message = page.locator("p.flash").inner_text()
        assert message.startswith("Geplande uitzondering geannuleerd."), message


def test_teacher_cannot_grant_for_another_teachers_lesson(site: Site, browser: Any) -> None:
    from server.extensions import db
    from server.models import ExceptionGrant

    page = browser.new_page()
    _sign_in(page, site, "demo.jans")
    # The page offers only the teacher's own lesson; tamper with the form as an attacker would.
    page.locator("input[name=lesson_id]").evaluate(
        "(el, id) => { el.value = String(id); }", site.other_lesson)
    with page.expect_response(lambda r: r.url.endswith("/nu/grant")) as answer:
        page.get_by_role("button", name="10 min").click()
    assert answer.value.status == 403
    assert "lessen die je zelf geeft" in page.locator("[role=alert]").inner_text()
    with site.app.app_context():
        assert db.session.scalar(select(ExceptionGrant).where(
            ExceptionGrant.lesson_id == site.other_lesson)) is None


def test_leader_creates_a_school_wide_exception(site: Site, browser: Any) -> None:
    page = browser.new_page()
    _sign_in(page, site, "demo.leiding")
    assert page.url.endswith("/leiding")
    from zoneinfo import ZoneInfo

    from server.models import utcnow
    # Nothing is chosen beforehand: scope, services and times are the leader's own choice.
    assert page.get_by_label("Bereik", exact=True).input_value() == ""
    assert page.get_by_label("Begin: datum").input_value() == ""
    page.get_by_label("Bereik", exact=True).select_option("school")
    page.get_by_label("Alle sociale media").check()
    now = utcnow().astimezone(ZoneInfo("Europe/Amsterdam"))
    later = now + timedelta(hours=2)
    page.get_by_label("Begin: datum").fill(now.strftime("%Y-%m-%d"))
    page.get_by_label("Begin: tijd").fill(now.strftime("%H:%M"))
    page.get_by_label("Einde: datum").fill(later.strftime("%Y-%m-%d"))
    page.get_by_label("Einde: tijd").fill(later.strftime("%H:%M"))
    page.get_by_label("Reden (optioneel)").fill("Open dag (browsertest)")
    page.get_by_role("button", name="Bekijken").click()
    page.wait_for_load_state()
    # Step two: the effect in words, and a confirmation the server asks for.
    effect = page.locator("#preview .effect").inner_text()
    assert effect.startswith("Alle sociale media toegestaan in de hele school, "), effect
    assert page.locator("ul.exceptions li").filter(has_text="Open dag (browsertest)").count() == 0
    _shoot(page, "leader-exception-preview")
    page.get_by_role("button", name="Ja, toekennen voor de hele school").click()
    page.wait_for_load_state()
    item = page.locator("ul.exceptions li").filter(has_text="Open dag (browsertest)")
    assert item.count() == 1 and "hele school" in item.inner_text()
    _shoot(page, "leader-exceptions")
    item.get_by_role("button", name="Stoppen").click()  # leave the school as it was
    page.wait_for_load_state()
    assert page.locator("ul.exceptions li").filter(has_text="Open dag (browsertest)").count() == 0


def test_it_imports_a_broken_timetable_and_sees_the_error_with_its_line(site: Site,
                                                                        browser: Any) -> None:
    page = browser.new_page()
    _sign_in(page, site, "demo.ict")
    page.goto(site.url + "/it/rooster")
    broken = b"datum,begin,einde,lokaal\n2026-11-23,09:00,09:50,1.01\n2026-11-23,25:00,26:00,1.01\n"
    page.get_by_label("Bestand").set_input_files(
        {"name": "rooster.csv", "mimeType": "text/csv", "buffer": broken})
    page.get_by_role("button", name="Importeren").click()
    page.wait_for_load_state()
    # The upload's page refreshes itself until the worker has run the import.
    page.locator(".import-state.failed").wait_for(timeout=45_000)
    alert = page.locator("[role=alert]").inner_text()
    assert "Er is niets geïmporteerd." in alert and "regel 3" in alert, alert
    _shoot(page, "it-timetable-error")


# The outermost elements that stick out to the right of the viewport (for the failure message).
WIDE_ELEMENTS = """[...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1
                && !el.closest('.table-wrap, .tabs'))
  .slice(0, 5)
  .map(el => el.tagName + '.' + el.className + ' ' + el.getBoundingClientRect().right)"""

PAGES = [
    ("demo.jans", ["/nu", "/week"]),
    ("demo.leiding", ["/leiding", "/audit"]),
    ("demo.ict", ["/it/lokalen", "/it/segmenten", "/it/gateways", "/it/rooster", "/it/diensten",
                  "/it/herinneringen", "/it/mensen", "/audit"]),
]
# Pages reached from a list by its first link: (list page, link selector, name).
DETAIL_PAGES = [
    ("/it/lokalen", "table tbody th a", "it-room"),
    ("/it/segmenten", "table tbody th a", "it-segment"),
    ("/it/gateways", "table a", "it-gateway"),
    ("/it/herinneringen", "table tbody a", "it-reminder"),
    ("/it/mensen", "table tbody a", "it-person"),
]


def _switch_language(page: Any, code: str) -> None:
    page.locator(f'form.lang button[value="{code}"]').click()
    page.wait_for_load_state()


def _check_phone(page: Any, path: str) -> None:
    page.set_viewport_size(PHONE)
    page.evaluate("window.dispatchEvent(new Event('resize'))")
    # Nothing may stick out sideways on a phone except inside scrollable tables.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, (path, overflow, page.evaluate(WIDE_ELEMENTS))
    header = page.evaluate(PHONE_HEADER)
    assert header["who"] is not False and header["tab"] is not False, (path, header)
    assert header["hinted"] == header["scrolling"], (path, header)
    page.set_viewport_size(DESKTOP)


@pytest.mark.parametrize("language", ["nl", "en"])
def test_every_page_renders_at_desktop_and_phone_size(site: Site, browser: Any,
                                                      language: str) -> None:
    page = browser.new_page()
    page.goto(site.url + "/login")
    if language != "nl":
        _switch_language(page, language)
    _shoot(page, f"{language}-login")
    for username, paths in PAGES:
        browser.clear_cookies()
        _sign_in(page, site, username) if language == "nl" else _sign_in_in(page, site, username,
                                                                          language)
        for path in paths:
            response = page.goto(site.url + path)
            assert response is not None and response.status == 200, path
            assert page.locator("html").get_attribute("lang") == language
            _shoot(page, f"{language}-" + path.strip("/").replace("/", "-"))
            _check_phone(page, path)
        if username == "demo.ict":
            for list_path, link, name in DETAIL_PAGES:
                page.goto(site.url + list_path)
                page.locator(link).first.click()
                page.wait_for_load_state()
                _shoot(page, f"{language}-{name}")
                _check_phone(page, name)
        if language != "nl":
            _switch_language(page, "nl")  # the choice is kept on the person: give it back


def _sign_in_in(page: Any, site: Site, username: str, language: str) -> None:
    """Sign in, then switch the interface to `language` (kept on the person)."""
    _sign_in(page, site, username)
    _switch_language(page, language)

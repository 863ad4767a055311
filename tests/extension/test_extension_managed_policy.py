"""Enterprise policy: settings for the extension's fixed ID in a Chromium policy file reach
storage.managed, win over the options page, lock the options page's fields, and apply on the
platforms (here with an English browser interface, which the extension follows)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.extension import (
    EXTENSION_ID,
    FakeInternet,
    chromium_available,
    extension_worker,
    launch_chromium,
    require,
    set_options,
)
from tests.support.extension_pages import (DIALOG, EDIT, POST, no_overlay, overlay_articles, sent,
                                           write_draft)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

POLICY_DIR = Path("/etc/chromium/policies/managed")
POLICY = {
    "serverUrl": "https://lesfocus.test",
    "school": "lucas-test",
    "audience": "staff",
    "schoolName": "Lucas Testschool",
    "schoolAliases": ["LTS"],
    "onlyOnFindings": True,
    "userMayChange": ["snoozeMinutes"],
    "notASetting": "dropped by the schema",
}
X_HOME = '#home-composer [data-testid="tweetTextarea_0"]'
X_HOME_BUTTON = '#home-composer [data-testid="tweetButtonInline"]'


@pytest.fixture(scope="module")
def managed_chromium(
    fake_internet: FakeInternet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Chromium with an English interface and a policy file for the extension (removed after)."""
    require(chromium_available(), "Debian's Chromium and Playwright")
    require(os.geteuid() == 0, "root (to write a Chromium policy file)")
    from playwright.sync_api import sync_playwright

    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    policy_file = POLICY_DIR / f"lesfocus-test-{uuid.uuid4().hex[:10]}.json"
    policy_file.write_text(json.dumps({"3rdparty": {"extensions": {EXTENSION_ID: POLICY}}}))
    try:
        with sync_playwright() as p:
            context = launch_chromium(
                p, tmp_path_factory.mktemp("managed-profile"), fake_internet.port, lang="en"
            )
            try:
                wait_for_policy(context)
                yield context
            finally:
                context.close()
    finally:
        policy_file.unlink(missing_ok=True)


def wait_for_policy(context: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until the background has read the policy; return its configuration."""
    worker = extension_worker(context)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = worker.evaluate("chrome.storage.managed.get(null)")
        if answer:
            return answer
        time.sleep(0.2)
    raise AssertionError("storage.managed stayed empty: the policy file was not applied")


def test_policy_reaches_storage_managed_and_unknown_keys_are_dropped(managed_chromium: Any) -> None:
    managed = wait_for_policy(managed_chromium)
    assert managed == {k: v for k, v in POLICY.items() if k != "notASetting"}


def test_policy_applies_on_the_platforms_and_wins_over_options(
    managed_chromium: Any, fake_internet: FakeInternet
) -> None:
    fake_internet.reminders = None
    set_options(managed_chromium, audience="student", onlyOnFindings=False, locale="nl")
    page = managed_chromium.new_page()
    try:
        page.goto(fake_internet.url("x", "/?lang=en"))
        # Only on findings (policy): a plain post goes straight through.
        write_draft(page, X_HOME, "nice weather")
        page.click(X_HOME_BUTTON)
        page.wait_for_function("window.__sent.length === 1")
        assert no_overlay(page)
        # The school's name (policy) for staff (policy, not the options' "student").
        write_draft(page, X_HOME, "Open day at LTS on Saturday")
        page.click(X_HOME_BUTTON)
        assert overlay_articles(page) == ["B1", "B2", "B3", "A2", "A3", "B5"]
        page.click(EDIT)
        assert len(sent(page)) == 1
    finally:
        page.close()
        set_options(managed_chromium)


def test_extension_follows_the_english_browser_interface(
    managed_chromium: Any, fake_internet: FakeInternet
) -> None:
    set_options(managed_chromium)
    page = managed_chromium.new_page()
    try:
        page.goto(fake_internet.url("whatsapp"))
        write_draft(page, '#chat [role="textbox"]', "call me on 0612345678")
        page.keyboard.press("Enter")
        page.wait_for_selector(DIALOG, state="visible")
        assert page.locator(DIALOG).get_attribute("lang") == "en"
        assert page.locator(POST).inner_text() == "Post anyway"
        assert page.locator('lesfocus-reminder li[data-article="A1"] .found').inner_text() == (
            "Found in your post: a phone number")
        page.click(POST)
        page.wait_for_function("window.__sent.length === 1")
    finally:
        page.close()


def test_options_page_locks_what_the_policy_sets(managed_chromium: Any) -> None:
    page = managed_chromium.new_page()
    try:
        page.goto(f"chrome-extension://{EXTENSION_ID}/ui/options.html")
        page.wait_for_selector("#options[data-loaded=true]", state="attached")
        for name in (
            "serverUrl",
            "school",
            "audience",
            "schoolName",
            "schoolAliases",
            "onlyOnFindings",
        ):
            assert page.locator(f"#{name}").is_disabled(), name
        assert page.locator("#locale").is_enabled()
        # The policy's userMayChange lets the user pause the reminders.
        assert page.locator("#snoozeMinutes").is_enabled()
        assert page.locator("#who-snoozeMinutes").inner_text() == (
            "Your school lets you choose this yourself.")
        assert page.locator("#managed-note").is_visible()
        # Each locked field says who set it: here the school's policy.
        assert page.locator("#who-audience").inner_text() == "Set by your school (IT's policy)."
        assert page.locator("#schoolAliases").input_value() == "LTS"
        assert page.locator("h1").inner_text() == "lesfocus – settings"
        page.select_option("#locale", "nl")
        page.click("button[type=submit]")
        page.wait_for_function("document.getElementById('status').textContent !== ''")
        stored = extension_worker(managed_chromium).evaluate("chrome.storage.local.get('options')")
        assert stored["options"] == {"locale": "nl", "snoozeMinutes": 0}
    finally:
        page.close()
        set_options(managed_chromium)


@pytest.mark.parametrize(
    "site,draft,expected",
    [
        ("x", "Open day at LTS on Saturday", ["B1", "B2", "B3", "A2", "A3", "B5"]),
        ("x", "bel 0612345678", ["A1", "B2", "A2", "A3", "B5"]),
        ("whatsapp", "Uw zoon heeft de toets gemist", ["B4", "A2", "A3", "B5"]),
    ],
)
def test_staff_reminders_under_a_policy_that_says_staff(
    managed_chromium: Any, fake_internet: FakeInternet, site: str, draft: str, expected: list[str]
) -> None:
    fake_internet.reminders = None
    set_options(managed_chromium)
    page = managed_chromium.new_page()
    try:
        page.goto(fake_internet.url(site))
        composer = X_HOME if site == "x" else '#chat [role="textbox"]'
        write_draft(page, composer, draft)
        if site == "x":
            page.click(X_HOME_BUTTON)
        else:
            page.keyboard.press("Enter")
        assert overlay_articles(page) == expected
        page.click(EDIT)
    finally:
        page.close()

"""The right reminders for each draft (local checks), in Dutch and English; server texts with
ETag and the bundled fallback; the lesson-time banner; snooze and only-on-findings mode."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.extension import EXTENSION_ID, FakeInternet, extension_worker, set_options
from tests.support.extension_pages import (DIALOG, EDIT, POST, overlay_articles, sent,
                                           write_draft)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SERVER = "https://lesfocus.test"
X_HOME = '#home-composer [data-testid="tweetTextarea_0"]'
X_HOME_BUTTON = '#home-composer [data-testid="tweetButtonInline"]'
WA_CHAT = '#chat [role="textbox"]'
WA_SEND = '#chat button:has(span[data-icon="send"])'
# A 1x1 PNG, attached as the draft's photo.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
    "awAAAABJRU5ErkJggg=="
)
SCHOOL = {"schoolName": "Testcollege", "schoolAliases": ["TC", "het Lucas"]}


@pytest.fixture(scope="module")
def page(chromium: Any) -> Iterator[Any]:
    """One tab for the module."""
    tab = chromium.new_page()
    yield tab
    tab.close()
    set_options(chromium)


def articles_for(
    page: Any, internet: FakeInternet, draft: str, media: bool = False, site: str = "x"
) -> list[str]:
    """Write `draft` on a platform, try to publish it and return the overlay's article codes."""
    composer, button = (X_HOME, X_HOME_BUTTON) if site == "x" else (WA_CHAT, WA_SEND)
    page.goto(internet.url(site))
    if media:
        page.set_input_files(
            "#home-composer input[type=file]",
            files=[{"name": "klas.png", "mimeType": "image/png", "buffer": PNG}],
        )
    write_draft(page, composer, draft)
    page.click(button)
    found = overlay_articles(page)
    page.click(EDIT)
    return found


@pytest.mark.parametrize(
    "audience,site,draft,media,expected",
    [
        ("student", "x", "Wat een mooie dag", False, ["A2", "A3"]),
        ("student", "x", "Bel me op 06-12345678", False, ["A1", "A2", "A3"]),
        ("student", "x", "mail me: sam@example.nl", False, ["A1", "A2", "A3"]),
        ("student", "x", "mijn bsn 123456782", False, ["A1", "A2", "A3"]),
        ("student", "x", "mijn bsn 123456789", False, ["A2", "A3"]),  # fails the elfproef
        ("student", "x", "stort op NL91 ABNA 0417 1643 00", False, ["A1", "A2", "A3"]),
        ("student", "x", "Dorpsstraat 12, 1234 AB Utrecht", False, ["A1", "A2", "A3"]),
        ("student", "x", "kijk deze foto", True, ["A5", "A2", "A3"]),
        ("student", "x", "Groeten uit het Testcollege", False, ["A1", "A4", "A2", "A3"]),
        ("student", "x", "vandaag op TC", False, ["A1", "A4", "A2", "A3"]),
        ("student", "x", "wat ben jij een idioot", False, ["A7", "A2", "A3"]),
        ("student", "x", "Hoera, vakantie!", False, ["A2", "A3"]),  # no insult inside a word
        ("student", "whatsapp", "Uw zoon heeft de toets gemist", False, ["A2", "A3"]),
        ("student", "x", "Sanne de Vries uit 2b is er niet", False, ["A1", "A2", "A3"]),
        ("student", "x", "Sanne is er niet", False, ["A2", "A3"]),  # a name alone is no finding
        # Without IT's policy the options page cannot make a student "staff" (issue 14, item 6);
        # staff reminders are tested with a policy in test_extension_managed_policy.py.
        ("staff", "x", "bel 0612345678", False, ["A1", "A2", "A3"]),
    ],
)
def test_local_checks_choose_the_reminders(
    page: Any,
    fake_internet: FakeInternet,
    audience: str,
    site: str,
    draft: str,
    media: bool,
    expected: list[str],
) -> None:
    set_options(page.context, audience=audience, **SCHOOL)
    assert articles_for(page, fake_internet, draft, media, site) == expected


def test_every_reminder_names_its_article_once_and_the_insult_one_asks_a_question(
    page: Any, fake_internet: FakeInternet
) -> None:
    set_options(page.context, **SCHOOL)
    page.goto(fake_internet.url("x"))
    write_draft(page, X_HOME, "jij sukkel, bel 0612345678 of vraag Sanne uit 2b")
    page.click(X_HOME_BUTTON)
    items = page.locator("lesfocus-reminder li")
    for i in range(items.count()):
        item = items.nth(i)
        article = item.get_attribute("data-article")
        # The badge names the article; the text does not cite it a second time.
        assert item.locator(".article").inner_text() == article
        assert item.locator(".article").get_attribute("aria-label") == f"Artikel {article}"
        assert f"artikel {article}" not in item.locator(".text").inner_text().lower()
    found = page.locator('lesfocus-reminder li[data-article="A1"] .found').inner_text()
    assert found == "Gevonden in je bericht: een telefoonnummer en een naam en een klas"
    shots = Path(__file__).resolve().parents[2] / "screenshots" / "extension"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "overlay-findings.png"))  # for people to look at
    assert page.locator('lesfocus-reminder li[data-article="A7"] .found').inner_text() == (
        "Gevonden in je bericht: een scheldwoord of bedreiging")
    a7 = page.locator('lesfocus-reminder li[data-article="A7"] .text').inner_text()
    assert "?" in a7
    page.click(EDIT)


def test_english_locale_translates_the_overlay(page: Any, fake_internet: FakeInternet) -> None:
    set_options(page.context, locale="en", **SCHOOL)
    page.goto(fake_internet.url("x", "/?lang=en"))
    write_draft(page, X_HOME, "call me on 0612345678")
    page.click(X_HOME_BUTTON)
    page.wait_for_selector(DIALOG, state="visible")
    assert page.locator(DIALOG).get_attribute("lang") == "en"
    assert page.locator(EDIT).inner_text() == "Edit"
    assert page.locator(POST).inner_text() == "Post anyway"
    a1 = page.locator('lesfocus-reminder li[data-article="A1"]')
    assert "(article A1)" not in a1.inner_text()
    assert a1.locator(".found").inner_text() == "Found in your post: a phone number"
    page.click(EDIT)


def test_dutch_is_the_default_interface(page: Any, fake_internet: FakeInternet) -> None:
    set_options(page.context)
    page.goto(fake_internet.url("x"))
    write_draft(page, X_HOME, "hallo")
    page.click(X_HOME_BUTTON)
    page.wait_for_selector(DIALOG, state="visible")
    assert page.locator(DIALOG).get_attribute("lang") == "nl"
    assert page.locator(EDIT).inner_text() == "Aanpassen"
    assert page.locator(POST).inner_text() == "Toch plaatsen"
    page.click(EDIT)


SERVER_REMINDERS = [
    {
        "article": "A2",
        "audience": "all",
        "trigger": "always",
        "text": "Servertekst: jij bent verantwoordelijk (artikel A2).",
    },
    {
        "article": "A1",
        "audience": "all",
        "trigger": "personal_data",
        "text": "Servertekst over gegevens (artikel A1).",
    },
    {
        "article": "Z9",
        "audience": "all",
        "trigger": "always",
        "text": "an entry that does not fit is dropped",
    },
]


def age_reminder_cache(context: Any) -> None:
    """Make the cached server texts look old, so that the next page revalidates them."""
    extension_worker(context).evaluate("""async () => {
        const all = await chrome.storage.local.get(null);
        for (const [k, v] of Object.entries(all)) {
            if (!k.startsWith('reminders|')) continue;
            await chrome.storage.local.set({[k]: {...v, fetchedAt: 0}});
        }
    }""")


def test_server_texts_are_used_revalidated_with_etag_and_kept_when_the_server_fails(
    page: Any, fake_internet: FakeInternet
) -> None:
    fake_internet.reminders = SERVER_REMINDERS
    try:
        set_options(page.context, serverUrl=SERVER)
        start = len(fake_internet.requests)
        assert articles_for(page, fake_internet, "bel 0612345678") == ["A1", "A2"]
        first = fake_internet.api_requests("/api/v1/reminders")
        gets = [r for r in first if r.method == "GET"]
        assert gets[-1].path == "/api/v1/reminders?audience=student&lang=nl"
        # Make the cache old: the next page asks again, with the ETag, and keeps the texts on 304.
        age_reminder_cache(page.context)
        page.goto(fake_internet.url("x"))
        page.wait_for_timeout(300)
        again = [
            r
            for r in fake_internet.requests[start:]
            if r.path.startswith("/api/v1/reminders") and r.method == "GET"
        ]
        assert again[-1].headers.get("If-None-Match") == '"v1"'
        write_draft(page, X_HOME, "hallo")
        page.click(X_HOME_BUTTON)
        page.wait_for_selector(DIALOG, state="visible")
        assert (
            page.locator('lesfocus-reminder li[data-article="A2"]')
            .inner_text()
            .endswith("Servertekst: jij bent verantwoordelijk.")  # the badge names A2
        )
        page.click(EDIT)
        # The server loses its texts: the cached ones stay in use, not the bundled ones.
        fake_internet.reminders = None
        age_reminder_cache(page.context)
        page.goto(fake_internet.url("x"))
        page.wait_for_timeout(300)
        assert articles_for(page, fake_internet, "bel 0612345678") == ["A1", "A2"]
    finally:
        fake_internet.reminders = None


# The server answers 404; nothing listens at all.
@pytest.mark.parametrize("server", [SERVER, "https://localhost:9"])
def test_bundled_texts_when_the_server_has_none_or_is_unreachable(
    page: Any, fake_internet: FakeInternet, server: str
) -> None:
    fake_internet.reminders = None
    set_options(page.context, serverUrl=server)
    assert articles_for(page, fake_internet, "hallo") == ["A2", "A3"]


NO_LESSON = {"in_lesson": False, "blocked_services": [], "until": None, "exception": None}


@pytest.fixture
def lesson_status(fake_internet: FakeInternet) -> Iterator[Callable[..., None]]:
    """Set the fake server's lesson status for a test; back to "no lesson" afterwards."""

    def set_status(**fields: Any) -> None:
        fake_internet.lesson_status = {**NO_LESSON, **fields}

    yield set_status
    set_status()


def test_lesson_banner_on_a_blocked_social_site_only(
    page: Any, fake_internet: FakeInternet, lesson_status: Callable[..., None]
) -> None:
    lesson_status(in_lesson=True, blocked_services=["twitter", "instagram"],
                  until="2030-01-01T10:30:00Z")
    set_options(page.context, serverUrl=SERVER)
    page.goto(fake_internet.url("x"))
    banner = page.locator('lesfocus-lesson-banner [role="status"]')
    banner.wait_for(state="visible", timeout=5000)
    assert "A4" in banner.inner_text()
    assert "docent" in banner.inner_text()
    page.goto(fake_internet.url("youtube"))
    page.wait_for_timeout(500)
    assert page.locator("lesfocus-lesson-banner").count() == 0
    lesson_status()
    set_options(page.context, serverUrl=SERVER)
    page.goto(fake_internet.url("x"))
    page.wait_for_timeout(500)
    assert page.locator("lesfocus-lesson-banner").count() == 0


def test_the_school_setting_goes_with_both_requests_to_a_server_of_several_schools(
    page: Any, fake_internet: FakeInternet, lesson_status: Callable[..., None]
) -> None:
    fake_internet.reminders = SERVER_REMINDERS
    lesson_status(in_lesson=True, blocked_services=["twitter"], until="2030-01-01T10:30:00Z")
    try:
        set_options(page.context, serverUrl=SERVER, school="vondel-college")
        start = len(fake_internet.requests)
        page.goto(fake_internet.url("x"))
        page.locator('lesfocus-lesson-banner [role="status"]').wait_for(state="visible",
                                                                       timeout=5000)
        wanted = {"/api/v1/lesson-status?school=vondel-college",
                  "/api/v1/reminders?audience=student&lang=nl&school=vondel-college"}
        for _ in range(50):  # the page's context asked for the reminders too; wait for it
            asked = {r.path for r in fake_internet.requests[start:] if r.path.startswith("/api/")}
            if wanted <= asked:
                break
            page.wait_for_timeout(100)
        assert wanted <= asked, asked
    finally:
        fake_internet.reminders = None


def test_lesson_banner_shows_the_end_the_gateway_enforces_for_this_service(
    page: Any, fake_internet: FakeInternet, lesson_status: Callable[..., None]
) -> None:
    # Lesson A blocks X until 09:50 only; lesson B (till 10:40) allows it through an exception.
    lesson_status(in_lesson=True, blocked_services=["instagram", "twitter"],
                  until="2030-01-01T10:40:00Z",
                  services={"twitter": {"blocked": True, "until": "2030-01-01T09:50:00Z"},
                            "instagram": {"blocked": True, "until": "2030-01-01T10:40:00Z"}})
    set_options(page.context, serverUrl=SERVER)
    page.goto(fake_internet.url("x"))
    banner = page.locator('lesfocus-lesson-banner [role="status"]')
    banner.wait_for(state="visible", timeout=5000)
    shown = [page.evaluate(
        "([t, lang]) => new Date(t).toLocaleTimeString(lang, "
        "{hour: '2-digit', minute: '2-digit'})", [t, banner.get_attribute("lang")])
        for t in ("2030-01-01T09:50:00Z", "2030-01-01T10:40:00Z")]
    assert shown[0] in banner.inner_text() and shown[1] not in banner.inner_text()


def test_without_a_policy_the_options_cannot_mute_or_pause_the_reminders(
    page: Any, fake_internet: FakeInternet
) -> None:
    # Stored as an older version's options page did: ignored now (issue 14, item 6); the
    # policy's userMayChange would allow them (tests/extension/config.test.mjs).
    set_options(page.context, onlyOnFindings=True, snoozeMinutes=60)
    assert articles_for(page, fake_internet, "mooi weer") == ["A2", "A3"]
    page.goto(fake_internet.url("x"))
    write_draft(page, X_HOME, "eerste bericht")
    page.click(X_HOME_BUTTON)
    page.click(POST)
    page.wait_for_function("window.__sent.length > 0")
    assert articles_for(page, fake_internet, "tweede bericht") == ["A2", "A3"]


def test_options_page_settings_apply_when_no_policy_sets_them(
    page: Any, fake_internet: FakeInternet
) -> None:
    set_options(page.context)
    page.goto(f"chrome-extension://{EXTENSION_ID}/ui/options.html")
    page.wait_for_selector("#options[data-loaded=true]", state="attached")
    assert page.locator("#managed-note").is_hidden()
    assert page.locator("h1").inner_text() == "lesfocus – instellingen"
    # The student's own choices are locked without a policy, and say so.
    for name in ("audience", "snoozeMinutes", "onlyOnFindings"):
        assert page.locator(f"#{name}").is_disabled(), name
        assert page.locator(f"#who-{name}").inner_text() == (
            "Vast: alleen IT van je school kan dit toestaan.")
    page.fill("#schoolName", "Vondelcollege")
    page.fill("#schoolAliases", "VC\nhet Vondel")
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('status').textContent === 'Opgeslagen.'")
    stored = extension_worker(page.context).evaluate("chrome.storage.local.get('options')")[
        "options"
    ]
    assert stored["schoolAliases"] == ["VC", "het Vondel"] and "audience" not in stored
    assert articles_for(page, fake_internet, "Groeten van het Vondel") == ["A1", "A4", "A2", "A3"]


# Per platform: (opener, composer, send button) for text drafts, and the same plus the file input
# (None: the composer always carries media) for a draft with a photo or video.
PLATFORM_COMPOSERS: dict[
    str, tuple[tuple[str | None, str, str], tuple[str | None, str, str, str | None]]
] = {
    "x": (
        (None, X_HOME, X_HOME_BUTTON),
        (None, X_HOME, X_HOME_BUTTON, "#home-composer input[type=file]"),
    ),
    "facebook": (
        (None, '#comment-form [role="textbox"]', "#comment-send"),
        (None, '#comment-form [role="textbox"]', "#comment-send", "#comment-form input[type=file]"),
    ),
    "instagram": (
        (None, "#comment-form textarea", "#comment-post"),
        ("#open-create", '#create-dialog [role="textbox"]', "#share", None),
    ),
    "youtube": (
        (None, "#top-comment #contenteditable-root", "#top-comment #submit-button button"),
        (
            None,
            "#community-post #contenteditable-root",
            "#community-post #submit-button button",
            "#community-post input[type=file]",
        ),
    ),
    "linkedin": (
        (None, "#message-form .msg-form__contenteditable", ".msg-form__send-button"),
        (
            "#open-share",
            "#share-modal .ql-editor",
            ".share-actions__primary-action",
            "#share-modal input[type=file]",
        ),
    ),
    "whatsapp": (
        (None, WA_CHAT, WA_SEND),
        (None, '#media-preview [role="textbox"]', '#media-preview [role="button"]', "#attach"),
    ),
    "tiktok": (
        (None, '#comment [contenteditable="true"]', '[data-e2e="comment-post"]'),
        (None, '#upload [contenteditable="true"]', '[data-e2e="post_video_button"]', None),
    ),
    "snapchat": (
        (None, "#chat textarea", '#chat button[type="submit"]'),
        (None, "#chat textarea", '#chat button[type="submit"]', "#chat input[type=file]"),
    ),
}
TEXT_DRAFTS = [
    ("bel me op 0612345678", "A1"),
    ("groeten van het Testcollege", "A4"),
    ("jij bent een idioot", "A7"),
]


def shown_articles(
    page: Any,
    opener: str | None,
    composer: str,
    button: str,
    draft: str,
    file_input: str | None = None,
) -> list[str]:
    """Open the composer, attach, write and publish; return the overlay's articles, then edit."""
    if opener:
        page.click(opener)
    if file_input:
        page.set_input_files(
            file_input, files=[{"name": "klas.png", "mimeType": "image/png", "buffer": PNG}]
        )
    write_draft(page, composer, draft)
    page.click(button)
    found = overlay_articles(page)
    page.click(EDIT)
    return found


@pytest.mark.parametrize("site", sorted(PLATFORM_COMPOSERS))
def test_each_platform_gets_the_right_reminders_in_dutch_and_english(
    page: Any, fake_internet: FakeInternet, site: str
) -> None:
    (t_open, t_box, t_send), (m_open, m_box, m_send, m_file) = PLATFORM_COMPOSERS[site]
    set_options(page.context, audience="student", schoolName="Testcollege")
    for draft, article in TEXT_DRAFTS:
        page.goto(fake_internet.url(site))
        found = shown_articles(page, t_open, t_box, t_send, draft)
        assert article in found and found[-2:] == ["A2", "A3"], (draft, found)
        assert "A5" not in found
    page.goto(fake_internet.url(site))
    assert "A5" in shown_articles(page, m_open, m_box, m_send, "kijk!", m_file)
    assert sent(page) == []

    set_options(page.context, audience="student", schoolName="Testcollege", locale="en")
    page.goto(fake_internet.url(site, "/?lang=en"))
    if t_open:
        page.click(t_open)
    write_draft(page, t_box, "call me on 0612345678")
    page.click(t_send)
    page.wait_for_selector(DIALOG, state="visible")
    assert page.locator(DIALOG).get_attribute("lang") == "en"
    a1 = page.locator('lesfocus-reminder li[data-article="A1"]')
    assert "(article A1)" not in a1.inner_text()  # the badge names the article once
    assert a1.locator(".found").inner_text() == "Found in your post: a phone number"
    page.click(POST)
    page.wait_for_function("window.__sent.length === 1")

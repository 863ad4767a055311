"""Every way to publish on each of the eight platforms is intercepted: "Aanpassen" sends nothing,
"Toch plaatsen" performs the original action exactly once (Chromium, fixture pages on loopback
under the platforms' real host names)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.extension import FakeInternet, set_options
from tests.support.extension_pages import DIALOG, EDIT, POST, no_overlay, publish, sent, write_draft

pytestmark = [pytest.mark.browser, pytest.mark.slow]

X_HOME = '#home-composer [data-testid="tweetTextarea_0"]'
X_HOME_BUTTON = '#home-composer [data-testid="tweetButtonInline"]'
X_REPLY = '#reply-composer [data-testid="tweetTextarea_0"]'
X_REPLY_BUTTON = '#reply-composer [data-testid="tweetButtonInline"]'
X_MODAL = '#modal-composer [data-testid="tweetTextarea_0"]'
FB_POST = '#post-dialog [role="textbox"]'
FB_COMMENT = '#comment-form [role="textbox"]'
IG_COMMENT = "#comment-form textarea"
IG_CAPTION = '#create-dialog [role="textbox"]'
YT_TOP = "#top-comment #contenteditable-root"
YT_REPLY = "#reply-comment #contenteditable-root"
YT_COMMUNITY = "#community-post #contenteditable-root"
LI_SHARE = "#share-modal .ql-editor"
LI_COMMENT = "#comment-form .ql-editor"
LI_MESSAGE = "#message-form .msg-form__contenteditable"
WA_CHAT = '#chat [role="textbox"]'
WA_SEND = '#chat button:has(span[data-icon="send"])'
TT_COMMENT = '#comment [contenteditable="true"]'
TT_CAPTION = '#upload [contenteditable="true"]'
SC_CHAT = "#chat textarea"
SC_QUICK = "#quick-reply input"

# (platform, opener, composer, way to publish, send button, published from)
CASES: list[tuple[str, str | None, str, str, str | None, str]] = [
    ("x", None, X_HOME, "click", X_HOME_BUTTON, "home-composer"),
    ("x", None, X_HOME, "enter-on-button", X_HOME_BUTTON, "home-composer"),
    ("x", None, X_HOME, "space-on-button", X_HOME_BUTTON, "home-composer"),
    ("x", None, X_HOME, "ctrl-enter", None, "home-composer"),
    ("x", None, X_HOME, "meta-enter", None, "home-composer"),
    ("x", None, X_REPLY, "click", X_REPLY_BUTTON, "reply-composer"),
    ("x", None, X_REPLY, "enter-on-button", X_REPLY_BUTTON, "reply-composer"),
    (
        "x",
        '[data-testid="SideNav_NewTweet_Button"]',
        X_MODAL,
        "click",
        '#modal-composer [data-testid="tweetButton"]',
        "modal-composer",
    ),
    ("x", '[data-testid="SideNav_NewTweet_Button"]', X_MODAL, "ctrl-enter", None, "modal-composer"),
    ("facebook", "#open-composer", FB_POST, "click", "#post-send", "post-dialog"),
    ("facebook", "#open-composer", FB_POST, "enter-on-button", "#post-send", "post-dialog"),
    ("facebook", None, FB_COMMENT, "enter", None, "comment-form"),
    ("facebook", None, FB_COMMENT, "click", "#comment-send", "comment-form"),
    ("instagram", None, IG_COMMENT, "enter", None, "comment-form"),
    ("instagram", None, IG_COMMENT, "click", "#comment-post", "comment-form"),
    ("instagram", None, IG_COMMENT, "space-on-button", "#comment-post", "comment-form"),
    ("instagram", "#open-create", IG_CAPTION, "click", "#share", "create-dialog"),
    ("youtube", None, YT_TOP, "click", "#top-comment #submit-button button", "top-comment"),
    ("youtube", None, YT_TOP, "ctrl-enter", None, "top-comment"),
    (
        "youtube",
        None,
        YT_TOP,
        "enter-on-button",
        "#top-comment #submit-button button",
        "top-comment",
    ),
    ("youtube", None, YT_REPLY, "click", "#reply-comment #submit-button button", "reply-comment"),
    (
        "youtube",
        None,
        YT_COMMUNITY,
        "click",
        "#community-post #submit-button button",
        "community-post",
    ),
    ("linkedin", "#open-share", LI_SHARE, "click", ".share-actions__primary-action", "share-modal"),
    ("linkedin", None, LI_COMMENT, "click", ".comments-comment-box__submit-button", "comment-form"),
    (
        "linkedin",
        None,
        LI_COMMENT,
        "enter-on-button",
        ".comments-comment-box__submit-button",
        "comment-form",
    ),
    ("linkedin", None, LI_MESSAGE, "enter", None, "message-form"),
    ("linkedin", None, LI_MESSAGE, "click", ".msg-form__send-button", "message-form"),
    ("whatsapp", None, WA_CHAT, "enter", None, "chat"),
    ("whatsapp", None, WA_CHAT, "click", WA_SEND, "chat"),
    ("whatsapp", None, WA_CHAT, "space-on-button", WA_SEND, "chat"),
    ("tiktok", None, TT_COMMENT, "enter", None, "comment"),
    ("tiktok", None, TT_COMMENT, "click", '[data-e2e="comment-post"]', "comment"),
    ("tiktok", None, TT_CAPTION, "click", '[data-e2e="post_video_button"]', "upload"),
    ("snapchat", None, SC_CHAT, "enter", None, "chat"),
    ("snapchat", None, SC_CHAT, "click", '#chat button[type="submit"]', "chat"),
    ("snapchat", None, SC_QUICK, "enter", None, "quick-reply"),  # implicit form submission
]
DRAFT = "Wat een mooie dag vandaag"


@pytest.fixture(scope="module")
def page(chromium: Any) -> Iterator[Any]:
    """One tab for the module; each test loads its fixture afresh."""
    set_options(chromium)
    tab = chromium.new_page()
    yield tab
    tab.close()


def open_fixture(
    page: Any, internet: FakeInternet, site: str, opener: str | None, lang: str = "nl"
) -> None:
    """Load a platform's fixture page and open the composer if it lives in a dialog."""
    page.goto(internet.url(site, f"/?lang={lang}"))
    if opener:
        page.click(opener)


@pytest.mark.parametrize(
    "site,opener,composer,way,button,where", CASES, ids=[f"{c[0]}-{c[5]}-{c[3]}" for c in CASES]
)
def test_every_way_to_publish_is_intercepted_edit_sends_nothing_post_sends_once(
    page: Any,
    fake_internet: FakeInternet,
    site: str,
    opener: str | None,
    composer: str,
    way: str,
    button: str | None,
    where: str,
) -> None:
    open_fixture(page, fake_internet, site, opener)
    write_draft(page, composer, DRAFT)

    publish(page, way, composer, button)
    page.wait_for_selector(DIALOG, state="visible", timeout=5000)
    assert sent(page) == []
    page.click(EDIT)
    assert no_overlay(page)
    assert sent(page) == []
    assert DRAFT in page.locator(composer).evaluate("el => el.value ?? el.innerText")

    publish(page, way, composer, button)
    page.wait_for_selector(DIALOG, state="visible", timeout=5000)
    assert sent(page) == []
    page.click(POST)
    page.wait_for_function("window.__sent.length > 0", timeout=5000)
    page.wait_for_timeout(150)  # a second, duplicate publish would land within this time
    assert [(p["where"], p["text"]) for p in sent(page)] == [(where, DRAFT)]
    assert no_overlay(page)


@pytest.mark.parametrize(
    "site,composer,button",
    [
        ("x", X_HOME, X_HOME_BUTTON),
        ("whatsapp", WA_CHAT, WA_SEND),
        ("youtube", YT_TOP, "#top-comment #submit-button button"),
    ],
)
def test_selectors_work_in_the_english_interface_too(
    page: Any, fake_internet: FakeInternet, site: str, composer: str, button: str
) -> None:
    open_fixture(page, fake_internet, site, None, lang="en")
    write_draft(page, composer, DRAFT)
    page.click(button)
    page.wait_for_selector(DIALOG, state="visible", timeout=5000)
    page.click(POST)
    page.wait_for_function("window.__sent.length > 0", timeout=5000)
    assert len(sent(page)) == 1


def test_escape_means_edit_and_focus_stays_in_the_dialog(
    page: Any, fake_internet: FakeInternet
) -> None:
    open_fixture(page, fake_internet, "x", None)
    write_draft(page, X_HOME, DRAFT)
    page.click(X_HOME_BUTTON)
    page.wait_for_selector(DIALOG, state="visible")
    dialog = page.locator(DIALOG)
    assert dialog.get_attribute("aria-modal") == "true"
    assert dialog.get_attribute("aria-labelledby") == "lesfocus-title"
    focused = (
        "() => document.querySelector('lesfocus-reminder').shadowRoot.activeElement?.dataset.action"
    )
    assert page.evaluate(focused) == "edit"
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "post"
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "edit"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(focused) in ("edit", "post")
    page.keyboard.press("Escape")
    assert no_overlay(page)
    assert sent(page) == []
    # Back in the draft: the composer has the focus again.
    assert page.evaluate("document.activeElement.dataset.testid") == "tweetTextarea_0"


def test_shift_enter_and_ime_composition_enter_are_not_sends(
    page: Any, fake_internet: FakeInternet
) -> None:
    open_fixture(page, fake_internet, "whatsapp", None)
    write_draft(page, WA_CHAT, DRAFT)
    page.focus(WA_CHAT)
    page.keyboard.press("Shift+Enter")
    assert no_overlay(page)
    # Enter that confirms an IME candidate arrives with keyCode 229 (the "Process" key).
    cdp = page.context.new_cdp_session(page)
    cdp.send(
        "Input.dispatchKeyEvent",
        {
            "type": "rawKeyDown",
            "key": "Enter",
            "code": "Enter",
            "windowsVirtualKeyCode": 229,
            "nativeVirtualKeyCode": 229,
        },
    )
    cdp.send(
        "Input.dispatchKeyEvent",
        {
            "type": "keyUp",
            "key": "Enter",
            "code": "Enter",
            "windowsVirtualKeyCode": 229,
            "nativeVirtualKeyCode": 229,
        },
    )
    cdp.detach()
    page.wait_for_timeout(100)
    assert no_overlay(page)
    assert sent(page) == []
    # A real Enter afterwards is a send, and is intercepted.
    page.keyboard.press("Enter")
    page.wait_for_selector(DIALOG, state="visible")
    page.click(EDIT)


def test_empty_composer_is_not_intercepted(page: Any, fake_internet: FakeInternet) -> None:
    open_fixture(page, fake_internet, "x", None)
    page.click(X_HOME_BUTTON)
    page.wait_for_timeout(100)
    assert no_overlay(page)
    assert sent(page) == []


def test_no_request_carries_the_draft(page: Any, fake_internet: FakeInternet) -> None:
    """Drafts full of personal data are posted on every platform; no request the browser makes
    (to any host: every name resolves to the logging fake internet) contains any of their text."""
    set_options(
        page.context,
        serverUrl="https://lesfocus.test",
        audience="student",
        schoolName="Testcollege",
    )
    fake_internet.reminders = None  # the server answers 404: bundled texts
    seen_by_browser: list[str] = []

    def record(request: Any) -> None:
        seen_by_browser.append(f"{request.url} {request.headers} {request.post_data or ''}")

    page.context.on("request", record)
    secrets = [
        "0612345678",
        "jan.jansen@example.nl",
        "123456782",
        "NL91ABNA0417164300",
        "Dorpsstraat 12",
        "1234 AB",
        "Testcollege",
        "geheimwoord",
    ]
    draft = (
        "bel 0612345678 of mail jan.jansen@example.nl, bsn 123456782, iban NL91ABNA0417164300, "
        "Dorpsstraat 12, 1234 AB Utrecht, Testcollege geheimwoord"
    )
    start = len(fake_internet.requests)
    posts = [
        ("x", None, X_HOME, X_HOME_BUTTON),
        ("facebook", None, FB_COMMENT, "#comment-send"),
        ("instagram", None, IG_COMMENT, "#comment-post"),
        ("youtube", None, YT_TOP, "#top-comment #submit-button button"),
        ("linkedin", None, LI_MESSAGE, ".msg-form__send-button"),
        ("whatsapp", None, WA_CHAT, WA_SEND),
        ("tiktok", None, TT_COMMENT, '[data-e2e="comment-post"]'),
        ("snapchat", None, SC_CHAT, '#chat button[type="submit"]'),
    ]
    for site, opener, composer, button in posts:
        open_fixture(page, fake_internet, site, opener)
        write_draft(page, composer, draft)
        page.click(button)
        page.wait_for_selector(DIALOG, state="visible")
        assert "A1" in page.locator(DIALOG).inner_text()
        page.click(POST)
        page.wait_for_function("window.__sent.length > 0")
    page.wait_for_timeout(300)
    logged = fake_internet.requests[start:]
    assert any(
        r.host == "lesfocus.test" for r in logged
    ), "the extension should have asked the server"
    for r in logged:
        blob = f"{r.host} {r.path} {r.headers} {r.body!r}".lower()
        for secret in secrets:
            assert (
                secret.lower() not in blob
            ), f"{secret!r} leaked in {r.method} https://{r.host}{r.path}"
    page.context.remove_listener("request", record)
    assert seen_by_browser, "Playwright should have seen the page loads"
    for line in seen_by_browser:
        for secret in secrets:
            assert secret.lower() not in line.lower(), f"{secret!r} leaked in {line[:200]}"
    set_options(page.context)


def test_a_page_that_removes_the_overlay_does_not_block_posting(
    page: Any, fake_internet: FakeInternet
) -> None:
    open_fixture(page, fake_internet, "x", None)
    write_draft(page, X_HOME, DRAFT)
    page.click(X_HOME_BUTTON)
    page.wait_for_selector(DIALOG, state="visible")
    page.evaluate("document.querySelector('lesfocus-reminder').remove()")
    page.click(X_HOME_BUTTON)
    page.wait_for_selector(DIALOG, state="visible")
    page.click(POST)
    page.wait_for_function("window.__sent.length > 0")
    assert [p["text"] for p in sent(page)] == [DRAFT]

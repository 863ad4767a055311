"""Helpers of the browser tests: drive a fixture page, publish in a given way, read the overlay."""

from __future__ import annotations

from typing import Any

OVERLAY = "lesfocus-reminder"
DIALOG = f'{OVERLAY} [role="dialog"]'
EDIT = f'{OVERLAY} button[data-action="edit"]'
POST = f'{OVERLAY} button[data-action="post"]'


def sent(page: Any) -> list[dict[str, Any]]:
    """What the fixture page has published so far."""
    return page.evaluate("window.__sent")


def publish(page: Any, way: str, composer: str, button: str | None) -> None:
    """Try to publish the draft in `composer` the way a user would."""
    if way == "click":
        page.click(button)
    elif way in ("enter-on-button", "space-on-button"):
        page.focus(button)
        page.keyboard.press("Enter" if way == "enter-on-button" else " ")
    elif way == "ctrl-enter":
        page.focus(composer)
        page.keyboard.press("Control+Enter")
    elif way == "meta-enter":
        page.focus(composer)
        page.keyboard.press("Meta+Enter")
    elif way == "enter":
        page.focus(composer)
        page.keyboard.press("Enter")
    else:
        raise ValueError(f"unknown way to publish: {way}")


def overlay_articles(page: Any) -> list[str]:
    """The article codes of the reminders the overlay shows, in order."""
    page.wait_for_selector(DIALOG, state="visible", timeout=5000)
    return page.locator(f"{OVERLAY} li").evaluate_all(
        "items => items.map(li => li.dataset.article)"
    )


def write_draft(page: Any, composer: str, text: str) -> None:
    """Type a draft into a composer (textarea, input or contenteditable)."""
    page.locator(composer).fill(text)


def no_overlay(page: Any) -> bool:
    """True when no reminder overlay is on the page."""
    return page.locator(OVERLAY).count() == 0

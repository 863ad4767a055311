"""Fixtures of the extension tests: the fake internet (one per session) and one Chromium with the
extension per test module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.extension import (
    FakeInternet,
    chromium_available,
    extension_worker,
    launch_chromium,
    require,
    start_fake_internet,
)


@pytest.fixture(scope="session")
def fake_internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeInternet]:
    """A loopback HTTPS server that answers for every host name."""
    state, server = start_fake_internet(tmp_path_factory.mktemp("cert"))
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def chromium(
    fake_internet: FakeInternet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One Chromium (Dutch interface) with the extension, shared by a test module."""
    require(chromium_available(), "Debian's Chromium and Playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = launch_chromium(p, tmp_path_factory.mktemp("profile"), fake_internet.port)
        try:
            extension_worker(context)
            yield context
        finally:
            context.close()

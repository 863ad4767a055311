"""Fixtures of the timetable tests (helpers live in tests/support/timetable.py)."""

from __future__ import annotations

import pytest
from flask import Flask
from tests.support.timetable import Importer


@pytest.fixture
def importer(app: Flask) -> Importer:
    """Imports into the `test` school of the app fixture (SQLite and PostgreSQL)."""
    return Importer(app)

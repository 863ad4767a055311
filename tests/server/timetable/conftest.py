"""Fixtures of the timetable tests (helpers live in timetable_helpers.py)."""

from __future__ import annotations

import pytest
from flask import Flask
from timetable_helpers import Importer


@pytest.fixture
def importer(app: Flask) -> Importer:
    """Imports into the `test` school of the app fixture (SQLite and PostgreSQL)."""
    return Importer(app)

"""The JSON API under /api/v1: one module per resource, registered on one blueprint."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def init_app(app: Flask) -> None:
    """Register the API blueprint with every resource module."""
    # The modules attach their routes to `bp` when imported.
    from . import routes  # noqa: F401
    from .lesson_status import FastPath
    app.register_blueprint(bp)
    app.wsgi_app = FastPath(app, app.wsgi_app)  # type: ignore[method-assign]

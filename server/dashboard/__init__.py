"""The server-rendered dashboard for teachers, school leaders and IT."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("dashboard", __name__, template_folder="../templates")


@bp.get("/")
def index() -> str:
    """Placeholder until the dashboard is built (issue 5)."""
    return "lesfocus"


def init_app(app: Flask) -> None:
    """Register the dashboard blueprint."""
    app.register_blueprint(bp)

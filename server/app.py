"""The application factory."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from werkzeug.middleware.proxy_fix import ProxyFix

from . import errors, models  # noqa: F401  (models: the metadata migrations compare with)
from .bounds import IdConverter
from .config import default_instance_path, load_settings
from .extensions import db, migrate
from .sealed import load_or_create_sealer
from .tokens import load_or_create_signing_key

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _private_file(path: Path) -> bool:
    """Create `path` empty, readable by its owner only; False when it was there already.

    Created with those permissions from the start (no moment in which others can read it):
    the session secret, and the SQLite file, whose -wal and -shm files SQLite gives the same
    permissions.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def _secret_key(instance: Path) -> str:
    path = instance / "secret_key"
    if _private_file(path):
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _sqlite_file(url: str) -> None:
    """A SQLite database file that does not exist yet is made private before SQLite makes it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not parsed.database.startswith("file:"):
        path = Path(parsed.database)
        if path.parent.is_dir():
            _private_file(path)


def _pool_options(url: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The connection pool's bounds (LESFOCUS_DB_POOL_*); an in-memory SQLite database keeps the
    single connection SQLAlchemy gives it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return {}
    return {"pool_size": settings["DB_POOL_SIZE"], "max_overflow": settings["DB_POOL_OVERFLOW"],
            "pool_timeout": settings["DB_POOL_TIMEOUT"]}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the lesfocus server: defaults, then `LESFOCUS_*` variables, then `config`."""
    settings = load_settings(config)
    instance = Path(settings["INSTANCE_PATH"] or default_instance_path()).resolve()
    instance.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__, instance_path=str(instance), instance_relative_config=False)
    # Before any route is added: `<int:...>` ids stop at the database's integer range.
    app.url_map.converters["int"] = IdConverter
    app.config.update({f"LESFOCUS_{k}": v for k, v in settings.items()})
    app.config["SECRET_KEY"] = settings["SECRET_KEY"] or _secret_key(instance)
    app.config["SQLALCHEMY_DATABASE_URI"] = (
        settings["DATABASE_URL"] or f"sqlite:///{instance / 'lesfocus.sqlite3'}")
    _sqlite_file(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _pool_options(
        app.config["SQLALCHEMY_DATABASE_URI"], settings))
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_CONTENT_LENGTH"]
    app.config["JSON_SORT_KEYS"] = False
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if settings.get("PUBLIC_URL", "") and str(settings["PUBLIC_URL"]).startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    for key, value in (config or {}).items():
        if key.isupper() and not key.startswith("LESFOCUS_") and key not in settings:
            app.config[key] = value  # plain Flask settings passed by tests (TESTING, ...)

    signing_key_file = Path(settings["SIGNING_KEY_FILE"] or instance / "policy-signing-key.pem")
    app.extensions["lesfocus.signing_key"] = load_or_create_signing_key(signing_key_file)
    sealing_key_file = Path(settings["SEALING_KEY_FILE"] or instance / "sealing-keys")
    app.extensions["lesfocus.sealer"] = load_or_create_sealer(sealing_key_file)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    errors.init_app(app)

    from . import agent_keys, api, changes, dashboard, health, metrics
    changes.init_app(app)
    agent_keys.init_app(app)
    api.init_app(app)
    dashboard.init_app(app)
    health.init_app(app)
    metrics.init_app(app)

    @app.after_request
    def _not_stored(response: Any) -> Any:
        # Answers carry tokens, personal data and state of the moment: no cache keeps them
        # unless a view says otherwise (the public keys, the reminders, static files).
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    from .cli import register_commands
    register_commands(app)
    if settings["TRUSTED_PROXIES"]:
        # The one place that reads X-Forwarded-For/-Proto: every other part sees the caller in
        # request.remote_addr. Only the last `hops` entries were written by the school's own
        # proxies; those before them come from the client and may be forged.
        hops = settings["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops)
    return app


SQLITE_BUSY_TIMEOUT_MS = 5000


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        # SQLite ignores ON DELETE CASCADE unless foreign keys are switched on per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        # A writer (the worker's import) waits up to 5 s for another; it is not refused at once.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL: readers never wait for a writer (https://sqlite.org/wal.html). The mode is kept in
        # the file, so it is switched once; in-memory databases have no WAL and stay as they are.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

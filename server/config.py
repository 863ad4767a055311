"""Configuration defaults and the `LESFOCUS_*` environment variables that override them."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Every setting the server knows, with its default. `LESFOCUS_<NAME>` in the environment overrides it.
DEFAULTS: dict[str, Any] = {
    "INSTANCE_PATH": None,  # default: default_instance_path(), not the current folder
    "DATABASE_URL": None,  # default: sqlite:///<instance>/lesfocus.sqlite3
    "SECRET_KEY": None,  # default: a random key kept in the instance folder
    "SIGNING_KEY_FILE": None,  # default: <instance>/policy-signing-key.pem
    # Keys that seal stored credentials (server/sealed.py); every process must read the same file.
    "SEALING_KEY_FILE": None,  # default: <instance>/sealing-keys
    "PUBLIC_URL": None,  # the server's base URL as agents see it (JWT audience)
    "POLICY_HORIZON_DAYS": 7,
    "POLICY_LONG_POLL_MAX": 60,
    "ENROLLMENT_TOKEN_HOURS": 24,
    "API_TOKEN_MINUTES": 15,
    # A dashboard session unused this long ends (a classroom PC a teacher walked away from);
    # the install's default, a school's IT may choose its own (server/school_settings.py).
    "DASHBOARD_IDLE_MINUTES": 20,
    # How long a sign-in with the school account waits for the OpenID Provider (each request).
    "SSO_TIMEOUT_SECONDS": 8,
    "AGENT_TOKEN_MAX_SECONDS": 300,
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,  # timetable uploads; JSON API bodies are capped lower
    "MAX_JSON_BODY": 256 * 1024,
    "AUDIT_RETENTION_DAYS": 365,
    "COUNTER_RETENTION_DAYS": 90,
    "IMPORT_RETENTION_DAYS": 30,  # finished dashboard imports (their reports) in server/imports.py
    "DEFAULT_LOCALE": "nl",
    # /readyz counts the worker as gone when its heartbeat (every 5 s) is older than this; an
    # import or a job holds the worker's one writer lock, so a big one delays the next beat.
    "WORKER_STALE_SECONDS": 120,
    # How many reverse proxies stand in front of the server (docs/deploy-server.md); 0 trusts
    # no X-Forwarded-* header. TRUST_PROXY is the older on/off form and counts as 1.
    "TRUSTED_PROXIES": 0,
    # Origins besides the shipped extension's that may read lesson-status (comma-separated), for
    # a school that builds and signs the extension itself: chrome-extension://<its ID>.
    "EXTENSION_ORIGINS": "",
    "TRUST_PROXY": False,
    # Database connections one process keeps (and may open beyond that under load), and how long
    # a request waits for one before it is answered 503 with Retry-After instead of waiting on.
    # Under the gevent worker thousands of requests share these; a long poll holds none while it
    # waits (server/api/gateways.py).
    "DB_POOL_SIZE": 10,
    "DB_POOL_OVERFLOW": 10,
    "DB_POOL_TIMEOUT": 10,
    # GET /metrics (server/metrics.py): 404 unless a bearer token or an allow list of addresses
    # and networks (comma-separated) is set; with both, a scrape needs both.
    "METRICS_TOKEN": "",
    "METRICS_ALLOW": "",
    # Alert e-mails to IT (server/alerts.py); none are sent while SMTP_HOST or SMTP_TO is empty.
    "SMTP_HOST": "",
    "SMTP_PORT": 587,
    "SMTP_USER": "",
    "SMTP_PASSWORD_FILE": "",  # a file holding the password, so it is in no environment
    "SMTP_FROM": "",
    "SMTP_TO": "",  # comma-separated addresses
    "SMTP_STARTTLS": True,
    "SMTP_TIMEOUT": 20,
    # A gateway that has not checked in this long during a lesson is offline.
    "ALERT_OFFLINE_MINUTES": 15,
    # A gateway that applied another version than the current policy this long is stale.
    "ALERT_STALE_MINUTES": 30,
    # A timetable source whose syncs failed for this long.
    "ALERT_SYNC_FAILED_MINUTES": 60,
}

_INT_SETTINGS = {k for k, v in DEFAULTS.items() if isinstance(v, int) and not isinstance(v, bool)}
_BOOL_SETTINGS = {k for k, v in DEFAULTS.items() if isinstance(v, bool)}


PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def default_instance_path(package_root: Path = PACKAGE_ROOT) -> Path:
    """Where the instance folder (keys, SQLite file, worker lock) is when none is configured.

    From a checkout (also an editable install, as `make demo` makes): `instance/` at the top of
    the repository. From an installed package: `<sys.prefix>/var/lesfocus`, as Flask does for
    installed apps. Either way absolute, so a command run in another directory finds the same
    signing key instead of silently creating a new one.
    """
    if (package_root / "pyproject.toml").is_file() and (package_root / "server").is_dir():
        return package_root / "instance"
    return Path(sys.prefix).resolve() / "var" / "lesfocus"


def _coerce(name: str, raw: str) -> Any:
    if name in _BOOL_SETTINGS:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if name in _INT_SETTINGS:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"LESFOCUS_{name} must be a whole number, not {raw!r}") from None
    return raw


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings: defaults, then `LESFOCUS_*` variables, then `overrides`."""
    environ = os.environ if environ is None else environ
    settings = dict(DEFAULTS)
    for name in DEFAULTS:
        raw = environ.get(f"LESFOCUS_{name}")
        if raw is not None and raw != "":
            settings[name] = _coerce(name, raw)
    if overrides:
        settings.update(overrides)
    if settings["TRUST_PROXY"] and not settings["TRUSTED_PROXIES"]:
        settings["TRUSTED_PROXIES"] = 1
    if isinstance(settings["TRUSTED_PROXIES"], bool) or not isinstance(
            settings["TRUSTED_PROXIES"], int) or settings["TRUSTED_PROXIES"] < 0:
        raise ValueError("LESFOCUS_TRUSTED_PROXIES must be a whole number of proxies, 0 or more, "
                         f"not {settings['TRUSTED_PROXIES']!r}")
    return settings

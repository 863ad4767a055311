"""Request parsing for the API modules: bounded JSON bodies, typed fields with `field` errors."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from flask import Response, current_app, request

from ..bounds import MAX_ID, describe_years, year_in_range
from ..errors import ApiError, abort_json
from ..extensions import db
from ..models import School


def json_body(*, optional: bool = False, scale: int = 1) -> dict[str, Any]:
    """The JSON object of the body; 413 above `scale` x LESFOCUS_MAX_JSON_BODY, else 400 if bad."""
    limit = int(current_app.config["LESFOCUS_MAX_JSON_BODY"]) * scale
    if request.content_length is not None and request.content_length > limit:
        abort_json(413, f"the JSON body is larger than {limit} bytes")
    # Read at most limit + 1 bytes, so a chunked body without Content-Length is bounded too.
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        abort_json(413, f"the JSON body is larger than {limit} bytes")
    if not raw.strip():
        if optional:
            return {}
        abort_json(400, "this request needs a JSON object as its body")
    if request.mimetype != "application/json":
        abort_json(400, "send the body as JSON (Content-Type: application/json)")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        abort_json(400, f"the body is not valid JSON: {err}")
    except RecursionError:
        abort_json(400, f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
    if not isinstance(body, dict):
        abort_json(400, "the JSON body must be an object")
    _check_json(body, "", 0)
    return body


# No request of the API needs more; json.loads itself gives up near Python's recursion limit.
MAX_JSON_DEPTH = 32


def _check_json(value: Any, where: str, depth: int) -> None:
    """Refuse bodies nested deeper than MAX_JSON_DEPTH, and strings that are not Unicode text
    (JSON's \\ud800 escapes make lone surrogates, which no database or page can hold)."""
    if depth > MAX_JSON_DEPTH:
        abort_json(400, f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep",
                   field=where or None)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            abort_json(400, f"{where or 'the body'} is not valid Unicode text (it holds a lone "
                       "surrogate, such as \\ud800)", field=where or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            _check_json(key, name, depth + 1)
            _check_json(item, name, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)


def _missing(name: str) -> ApiError:
    return ApiError(400, f"{name} is required", field=name)


def get_str(body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 200,
            default: str | None = None, allow_empty: bool = False) -> str | None:
    """A string field (stripped); 400 naming the field when missing, not a string or too long."""
    value = body.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return default
    if not isinstance(value, str):
        abort_json(400, f"{name} must be a string", field=name)
    value = value.strip()
    if not value and not allow_empty:
        abort_json(400, f"{name} must not be empty", field=name)
    if len(value) > max_len:
        abort_json(400, f"{name} is longer than {max_len} characters", field=name)
    return value


def get_int(body: dict[str, Any], name: str, *, required: bool = True, minimum: int | None = None,
            maximum: int | None = None) -> int | None:
    """A whole-number field within bounds; booleans are not numbers here."""
    value = body.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        abort_json(400, f"{name} must be a whole number", field=name)
    if maximum is None:
        maximum = MAX_ID  # no field of the API holds more (ids are database integers)
    if minimum is not None and value < minimum:
        abort_json(400, f"{name} must be at least {minimum}", field=name)
    if maximum is not None and value > maximum:
        abort_json(400, f"{name} must be at most {maximum}", field=name)
    return value


def get_str_list(body: dict[str, Any], name: str, *, required: bool = True, max_items: int = 500,
                 max_len: int = 200, nullable: bool = False) -> list[str] | None:
    """A list of non-empty strings; 400 naming the field (and item index) when it is not one."""
    if name not in body or body[name] is None:
        if nullable and name in body:
            return None
        if required:
            raise _missing(name)
        return None
    value = body[name]
    if not isinstance(value, list):
        abort_json(400, f"{name} must be a list of strings", field=name)
    if len(value) > max_items:
        abort_json(400, f"{name} has more than {max_items} items", field=name)
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or len(item) > max_len:
            abort_json(400, f"{name}[{index}] must be a non-empty string of at most {max_len} "
                       "characters", field=f"{name}[{index}]")
        out.append(item.strip())
    return out


# The longest ISO-8601 date-time read (documented as maxLength in the OpenAPI document).
MAX_DATETIME_LENGTH = 40


def parse_datetime(text: Any, name: str, *, tz: str = "UTC") -> datetime:
    """An ISO-8601 date-time (a naive one is read in `tz`); 400 naming the field otherwise."""
    from zoneinfo import ZoneInfo
    if not isinstance(text, str):
        abort_json(400, f"{name} must be an ISO-8601 date-time string", field=name)
    if len(text) > MAX_DATETIME_LENGTH:
        abort_json(400, f"{name} is longer than {MAX_DATETIME_LENGTH} characters for a "
                   "date-time", field=name)
    try:
        # Python 3.11+ reads `Z` and date-only values; a query string may turn `+` into a space.
        cleaned = text.strip()
        if "T" in cleaned:
            cleaned = cleaned.replace(" ", "+")
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        abort_json(400, f"{name} is not an ISO-8601 date-time: {text!r}", field=name)
    if not year_in_range(value):
        abort_json(400, f"{name} must lie {describe_years()}: {text!r}", field=name)
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value.astimezone(timezone.utc)


def get_datetime(body: dict[str, Any], name: str, *, required: bool = False,
                 tz: str = "UTC") -> datetime | None:
    """An optional ISO-8601 date-time field of a body, as aware UTC."""
    if body.get(name) is None:
        if required:
            raise _missing(name)
        return None
    return parse_datetime(body[name], name, tz=tz)


def query_bool(name: str) -> bool | None:
    """A boolean query parameter (1/true/yes, 0/false/no); 400 for anything else."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in {"1", "true", "yes"}:
        return True
    if lowered in {"0", "false", "no"}:
        return False
    abort_json(400, f"{name} must be true or false", field=name)


def query_str(name: str) -> str | None:
    """A text query parameter (None when absent or empty); 400 naming it when longer than its
    QUERY_TEXT_MAX (server/bounds.py)."""
    from ..bounds import QUERY_TEXT_MAX
    raw = request.args.get(name)
    limit = QUERY_TEXT_MAX[name]
    if raw is not None and len(raw) > limit:
        abort_json(400, f"{name} is longer than {limit} characters", field=name)
    return raw or None


def query_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """A whole-number query parameter clamped to [minimum, maximum]; 400 when not a number."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort_json(400, f"{name} must be a whole number", field=name)
    return max(minimum, min(maximum, value))


def iso(value: datetime | None) -> str | None:
    """A datetime as UTC ISO-8601 with a `Z`, or None."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def get_object(model: type, object_id: Any, school_id: int, what: str) -> Any:
    """The object of this school with `object_id`; 404 (also for another school's object)."""
    obj = db.session.get(model, object_id)
    if obj is None or getattr(obj, "school_id", None) != school_id:
        abort_json(404, f"no {what} {object_id} in your school")
    return obj


def school_by_slug(slug: str | None) -> School:
    """The school named by `slug`, or the only school when no slug is given; 404 / 400 otherwise."""
    from sqlalchemy import select
    if slug:
        school = db.session.scalar(select(School).where(School.slug == slug))
        if school is None:
            abort_json(404, f"no school {slug!r}", field="school")
        return school
    schools = db.session.scalars(select(School).limit(2)).all()
    if len(schools) != 1:
        abort_json(400, "this server has several schools: name one with ?school=SLUG",
                   field="school")
    return schools[0]


CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Methods", "GET, OPTIONS"),
                ("Access-Control-Allow-Headers", "If-None-Match"),
                ("Access-Control-Expose-Headers", "ETag"),
                ("Access-Control-Max-Age", "86400"))


def add_cors(response: Response) -> Response:
    """Allow any origin to read this public, read-only answer (the extension fetches it)."""
    for name, value in CORS_HEADERS:
        response.headers[name] = value
    return response


# The shipped extension's origin in Chromium and Edge: its ID follows from the manifest's `key`
# (tests/server/api/test_public_api.py recomputes it). Firefox gives every install its own random
# moz-extension://<UUID> origin, so those are recognised by their form; no web page can send an
# Origin of either scheme. LESFOCUS_EXTENSION_ORIGINS adds a school's own build.
SHIPPED_EXTENSION_ORIGINS = frozenset({"chrome-extension://gakiipjkpedkfbmonjbfkdjfigbnpnbj"})
_FIREFOX_ORIGIN = re.compile(r"moz-extension://[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                             r"[0-9a-f]{12}")


def extension_origin_allowed(origin: str | None, extra: str = "") -> bool:
    """Whether `origin` is the lesfocus extension's (shipped, any Firefox install, or listed)."""
    if not origin:
        return False
    if origin in SHIPPED_EXTENSION_ORIGINS or _FIREFOX_ORIGIN.fullmatch(origin):
        return True
    return origin in {item.strip().rstrip("/") for item in extra.split(",") if item.strip()}


def extension_cors_headers(origin: str | None, extra: str = "") -> list[tuple[str, str]]:
    """The CORS headers of an answer only the extension may read (lesson-status: whether this
    device is in a lesson, and its rooms): `Vary: Origin` always, the rest for its origin only."""
    if not extension_origin_allowed(origin, extra):
        return [("Vary", "Origin")]
    return [("Access-Control-Allow-Origin", str(origin)), ("Vary", "Origin"),
            *(header for header in CORS_HEADERS if header[0] != "Access-Control-Allow-Origin")]


def add_extension_cors(response: Response) -> Response:
    """`extension_cors_headers` for this request's Origin."""
    extra = str(current_app.config.get("LESFOCUS_EXTENSION_ORIGINS") or "")
    for name, value in extension_cors_headers(request.headers.get("Origin"), extra):
        response.headers[name] = value
    return response

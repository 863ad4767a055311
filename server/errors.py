"""One error shape for the whole API: `{"error": reason phrase, "message": what was wrong}`."""

from __future__ import annotations

import random
import time
from typing import Any, NoReturn

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import (BadRequest, HTTPException, InternalServerError,
                                 ServiceUnavailable)
from werkzeug.http import HTTP_STATUS_CODES


class ApiError(Exception):
    """An error answered to the client as JSON with `status`; raise it from API code."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}


def json_error(status: int, message: str, *, field: str | None = None,
               headers: dict[str, str] | None = None) -> Response:
    """Build the JSON error response of the API."""
    body: dict[str, Any] = {"error": HTTP_STATUS_CODES.get(status, "Error"), "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def abort_json(status: int, message: str, *, field: str | None = None) -> NoReturn:
    """Stop the request with a JSON error."""
    raise ApiError(status, message, field=field)


def _wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes[
        "text/html"]


# A request that found no free database connection (or no database) is told to come back after a
# random pause in this range, so agents that were refused together do not return together.
RETRY_AFTER_SECONDS = (5, 20)
# Under overload thousands of requests are refused a second: one log line per interval says so.
_LOG_EVERY_SECONDS = 10.0
_log_state = {"last": float("-inf"), "quiet": 0}


def _database_unavailable(app: Flask, err: Exception) -> Any:
    """503 with Retry-After for a request the database could not serve now: the pool had no free
    connection within LESFOCUS_DB_POOL_TIMEOUT, or the database could not be reached. Nothing was
    written (the request's transaction never committed)."""
    # The class and the driver's first line only: SQLAlchemy's message carries the statement and
    # its parameters, which may hold personal data.
    now = time.monotonic()
    if now - _log_state["last"] >= _LOG_EVERY_SECONDS:
        original = getattr(err, "orig", None) or err
        first_line = (str(original).strip().splitlines() or [""])[0][:200]
        app.logger.warning("database unavailable on %s %s: %s: %s (answered 503; %d more since "
                           "the last such line)", request.method, request.path,
                           type(err).__name__, first_line, _log_state["quiet"])
        _log_state.update(last=now, quiet=0)
    else:
        _log_state["quiet"] += 1
    retry_after = str(random.randint(*RETRY_AFTER_SECONDS))
    headers = {"Retry-After": retry_after}
    if _wants_json():
        return json_error(503, "the database is busy or cannot be reached; nothing was changed. "
                          f"Try again in {retry_after} s", headers=headers)
    try:
        error = ServiceUnavailable(gettext(
            "The server is very busy right now and nothing was changed. Try again in a few "
            "seconds."))
        return render_template("error.html", status=503, error=error), 503, headers
    except Exception:  # noqa: BLE001 - the error page must never fail in turn
        return "Service Unavailable", 503, headers


def _default_description(status: int) -> str:
    """What an error page says, in the reader's language, where the code gave no text."""
    texts = {
        400: gettext("The request could not be understood. Go back and try again."),
        403: gettext("You have no access to this page."),
        404: gettext("This page does not exist (any more). Check the address, or start again "
                     "from the start page."),
        405: gettext("This page cannot be used this way."),
        413: gettext("The upload is too large."),
        429: gettext("Too many requests. Wait a moment and try again."),
    }
    return texts.get(status, gettext("Something went wrong (error %(status)d).", status=status))


def init_app(app: Flask) -> None:
    """Answer errors as JSON for the API (and JSON clients), as HTML for browsers."""

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return json_error(err.status, err.message, field=err.field, headers=err.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Any:
        status = err.code or 500
        # The exception's own headers (Allow on a 405, WWW-Authenticate, Retry-After), not its
        # content type.
        headers = {name: value for name, value in err.get_headers()
                   if name.lower() != "content-type"}
        if _wants_json():
            return json_error(status, err.description or HTTP_STATUS_CODES.get(status, "Error"),
                              headers=headers)
        if err.description == type(err).description:  # werkzeug's English default
            err.description = _default_description(status)
        try:
            return render_template("error.html", status=status, error=err), status, headers
        except Exception:  # noqa: BLE001 - the error page must never fail in turn
            return err

    @app.errorhandler(PoolTimeout)
    @app.errorhandler(OperationalError)
    def _database_error(err: Exception) -> Any:
        return _database_unavailable(app, err)

    @app.errorhandler(DataError)
    def _value_refused(err: DataError) -> Any:
        # The last guard: input checks refuse such values naming the field before this. The
        # database's own words are not shown (they quote the value and the column type).
        app.logger.warning("the database refused a value on %s %s: %s", request.method,
                           request.path, type(getattr(err, "orig", err)).__name__)
        message = ("a value in this request does not fit its field (too long, or out of range); "
                   "nothing was changed")
        if _wants_json():
            return json_error(400, message)
        return _http_error(BadRequest(gettext(
            "A value you entered is too long or out of range; nothing was changed.")))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if _wants_json():
            return json_error(500, "the server failed to handle this request")
        page = InternalServerError(gettext(
            "Something went wrong on the server; nothing was changed. Try again, or tell IT "
            "what you were doing."))
        try:
            return render_template("error.html", status=500, error=page), 500
        except Exception:  # noqa: BLE001 - the error page must never fail in turn
            return "Internal Server Error", 500

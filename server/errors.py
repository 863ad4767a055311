"""One error shape for the whole API: `{"error": reason phrase, "message": what was wrong}`."""

from __future__ import annotations

from typing import Any, NoReturn

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException
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
        try:
            return render_template("error.html", status=status, error=err), status, headers
        except Exception:  # noqa: BLE001 - the error page must never fail in turn
            return err

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if _wants_json():
            return json_error(500, "the server failed to handle this request")
        return "Internal Server Error", 500

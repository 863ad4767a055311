"""The server's public policy-signing keys (JWKS, RFC 7517)."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from . import bp


@bp.get("/keys")
def keys() -> Response:
    """The public keys that verify policies, as a JWKS document."""
    response = jsonify(current_app.extensions["lesfocus.signing_key"].jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response

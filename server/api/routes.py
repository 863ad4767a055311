"""Imports every API resource module so that its routes are registered on the blueprint."""

from __future__ import annotations

from flask import Response, request

from . import (audit, auth, bp, exceptions, gateways, keys, lesson_status, lessons,  # noqa: F401
               openapi, reminders, rooms, segments, services)
from .common import add_cors

# Public, read-only answers that browser extensions fetch from any origin.
CORS_ENDPOINTS = {"api.public_reminders", "api.lesson_status", "api.keys", "api.openapi_document"}


@bp.after_request
def _cors(response: Response) -> Response:
    # Runs for Flask's automatic OPTIONS answers too, which makes them CORS preflight answers.
    if request.endpoint in CORS_ENDPOINTS:
        add_cors(response)
    return response

"""Imports every API resource module so that its routes are registered on the blueprint."""

from __future__ import annotations

from flask import Response, request

from . import (audit, auth, bp, exceptions, gateways, keys, lesson_status, lessons,  # noqa: F401
               openapi, reminders, rooms, segments, services)
from .common import add_cors, add_extension_cors

# Public, read-only answers that any origin may read (the school's reminder texts, the keys, the
# API description). lesson-status tells whether this device is in a lesson: the extension only.
CORS_ENDPOINTS = {"api.public_reminders", "api.keys", "api.openapi_document"}
EXTENSION_ONLY_ENDPOINTS = {"api.lesson_status"}


@bp.after_request
def _cors(response: Response) -> Response:
    # Runs for Flask's automatic OPTIONS answers too, which makes them CORS preflight answers.
    if request.endpoint in CORS_ENDPOINTS:
        add_cors(response)
    elif request.endpoint in EXTENSION_ONLY_ENDPOINTS:
        add_extension_cors(response)
    return response

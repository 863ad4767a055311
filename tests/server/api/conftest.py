"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.support.api import Agent, add_segment_for, new_gateway
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from server.tokens import public_jwk


@pytest.fixture
def enrolled(app: Flask, client: FlaskClient) -> Callable[..., Agent]:
    """Make enrolled gateways: `enrolled(name, cidrs=[...], rooms=[...])`."""

    def make(name: str = "gw1", cidrs: list[str] | None = None,
             rooms: list[str] | None = None) -> Agent:
        gateway_id, token = new_gateway(app, name)
        segment_ids = []
        if cidrs:
            segment_ids.append(add_segment_for(app, gateway_id, f"{name}-seg", cidrs,
                                               rooms or [f"{name}-room"]))
        key = Ed25519PrivateKey.generate()
        response = client.post("/api/v1/gateways/enroll",
                               json={"token": token, "public_key": public_jwk(key.public_key())})
        assert response.status_code == 201, response.get_json()
        return Agent(gateway_id, key, segment_ids)

    return make

"""The thin Python client against a real server."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from authsvc.client import AuthClient, AuthsvcError

from tests.support import new_user


async def test_client_round_trip(grpc_target, services) -> None:
    """authorize, add, delete and replace work, and errors carry the server's reason."""
    user = await new_user(services, "c1")

    def scenario() -> None:
        with AuthClient(grpc_target) as client:
            token = client.authorize(user.username, "c1", ttl=60)
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["exp"] - claims["iat"] == 60
            client.add_password(user.username, "c1", "c2")
            client.delete_password(user.username, "c2", "c1")
            with pytest.raises(AuthsvcError) as caught:
                client.authorize(user.username, "c1")
            assert caught.value.reason == "INVALID_CREDENTIALS"
            with pytest.raises(AuthsvcError) as last:
                client.delete_password(user.username, "c2", "c2")
            assert last.value.reason == "CANNOT_DELETE_LAST_PASSWORD"
            client.replace_passwords(user.username, "c2", "c3")
            assert client.authorize(user.username, "c3")

    await asyncio.to_thread(scenario)

"""The password list under real concurrent calls on PostgreSQL: nothing lost, never empty."""

from __future__ import annotations

import asyncio

import grpc
from authsvc.v1 import password_service_pb2 as pb
from authsvc.v1 import password_service_pb2_grpc

from service import app
from service.store.db import Database
from tests.support import basic, new_user

COUNT_PASSWORDS = "SELECT count(*) AS n FROM passwords WHERE user_id = $1"


async def count_passwords(db, user_id) -> int:
    row = await db.fetchrow(COUNT_PASSWORDS, user_id)
    assert row is not None
    return int(row["n"])


async def test_concurrent_adds_lose_nothing(
    channel: grpc.aio.Channel, services: app.Services, db: Database
) -> None:
    """Ten concurrent AddPassword calls leave eleven passwords, each of which logs in."""
    user = await new_user(services, "base-pw")
    stub = password_service_pb2_grpc.PasswordServiceStub(channel)
    new = [f"added-{i}" for i in range(10)]
    await asyncio.gather(
        *(
            stub.AddPassword(
                pb.AddPasswordRequest(new_password=p), metadata=basic(user.username, "base-pw")
            )
            for p in new
        )
    )
    assert await count_passwords(db, user.id) == 11
    for password in new:
        await services.authenticator.authenticate(user.username, password, "ip:192.0.2.9")


async def test_concurrent_deletes_never_remove_the_last_password(
    channel: grpc.aio.Channel, services: app.Services, db: Database
) -> None:
    """Concurrent deletes of every password, each authenticated by another, leave exactly one."""
    passwords = [f"pw-{i}" for i in range(6)]
    user = await new_user(services, passwords[0])
    stub = password_service_pb2_grpc.PasswordServiceStub(channel)
    for password in passwords[1:]:
        await stub.AddPassword(
            pb.AddPasswordRequest(new_password=password),
            metadata=basic(user.username, passwords[0]),
        )
    # Each call deletes password i while authenticating with password i+1 (wrapping round), so
    # every password is both deleted by one call and the credential of another.
    calls = [
        stub.DeletePassword(
            pb.DeletePasswordRequest(old_password=passwords[i]),
            metadata=basic(user.username, passwords[(i + 1) % len(passwords)]),
        )
        for i in range(len(passwords))
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(not isinstance(r, Exception) or isinstance(r, grpc.aio.AioRpcError) for r in results)
    assert {f.code() for f in failures} <= {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
    }
    remaining = await count_passwords(db, user.id)
    assert remaining >= 1
    assert len(results) - len(failures) == len(passwords) - remaining


async def test_two_deletes_of_a_pair_leave_one(
    channel: grpc.aio.Channel, services: app.Services, db: Database
) -> None:
    """Two concurrent deletes on a list of two: one succeeds, one is refused, one password stays."""
    for _ in range(5):
        user = await new_user(services, "left-pw")
        stub = password_service_pb2_grpc.PasswordServiceStub(channel)
        await stub.AddPassword(
            pb.AddPasswordRequest(new_password="right-pw"), metadata=basic(user.username, "left-pw")
        )
        results = await asyncio.gather(
            stub.DeletePassword(
                pb.DeletePasswordRequest(old_password="left-pw"),
                metadata=basic(user.username, "left-pw"),
            ),
            stub.DeletePassword(
                pb.DeletePasswordRequest(old_password="right-pw"),
                metadata=basic(user.username, "right-pw"),
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, grpc.aio.AioRpcError) for r in results) == 1
        assert await count_passwords(db, user.id) == 1

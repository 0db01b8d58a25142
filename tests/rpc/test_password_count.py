"""The cap on a user's passwords, and failed logins that cost the same whatever the list."""

from __future__ import annotations

import grpc
import pytest
from authsvc.v1 import password_service_pb2 as pb
from authsvc.v1 import password_service_pb2_grpc

from service.config import Settings
from service.domain.authenticator import Authenticator
from service.domain.passwords import PasswordHasher
from service.errors import AuthError
from service.store.passwords import PgCredentialStore
from tests.conftest import CHEAP_ARGON2
from tests.support import basic, error_info, new_user, serving


async def test_adding_past_the_limit_is_too_many_passwords(db, settings) -> None:
    """At the default limit of two, a third password is refused: TOO_MANY_PASSWORDS."""
    async with serving(db, settings, max_passwords=Settings().max_passwords) as (channel, svc):
        user = await new_user(svc, "one-pw")
        stub = password_service_pb2_grpc.PasswordServiceStub(channel)
        await stub.AddPassword(
            pb.AddPasswordRequest(new_password="two-pw"), metadata=basic(user.username, "one-pw")
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AddPassword(
                pb.AddPasswordRequest(new_password="three-pw"),
                metadata=basic(user.username, "one-pw"),
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(caught.value).reason == "TOO_MANY_PASSWORDS"
        await stub.ReplacePasswords(
            pb.ReplacePasswordsRequest(new_password="three-pw"),
            metadata=basic(user.username, "two-pw"),
        )


class CountingHasher(PasswordHasher):
    """Counts verifications, real and dummy alike."""

    def __init__(self) -> None:
        super().__init__(CHEAP_ARGON2, workers=1, queue_limit=64)
        self.verifications = 0

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return await super().verify(password_hash, password)


@pytest.mark.parametrize("held", [0, 1, 3, 6])
async def test_failed_login_costs_the_same_whatever_the_list(db, services, held: int) -> None:
    """A failed login runs exactly max_passwords (4) verifications: for an unknown user, and for
    a user with one, three or six (over the limit, lowered since) passwords, so timing tells
    neither existence nor list length."""
    from datetime import UTC, datetime

    hasher = CountingHasher()
    try:
        authenticator = Authenticator(
            PgCredentialStore(db), hasher, lambda: datetime.now(UTC), max_passwords=4
        )
        name = "nobody-at-all"
        if held:
            user = await new_user(services, "p0")
            for _ in range(1, held):
                await db.execute(
                    "INSERT INTO passwords (user_id, hash) SELECT user_id, hash FROM passwords"
                    " WHERE user_id = $1 LIMIT 1",
                    user.id,
                )
            name = user.username
            count = await db.fetchrow("SELECT count(*) FROM passwords WHERE user_id = $1", user.id)
            assert count is not None and count[0] == held
        await hasher.prepare()
        hasher.verifications = 0
        with pytest.raises(AuthError):
            await authenticator.authenticate(name, "wrong")
        assert hasher.verifications == 4
    finally:
        hasher.close()


async def test_a_burst_never_counts_a_login_it_then_refuses(db, services) -> None:
    """With the hash queue nearly full, twelve right-password logins at once are each either
    served or refused UNAVAILABLE before being counted: no name is left with a failure."""
    import asyncio
    from datetime import UTC, datetime

    from service.domain.throttle import LoginThrottle, ThrottlePolicy
    from service.domain.usernames import username_key
    from service.errors import Reason
    from service.store.login_throttle import PgLoginThrottleStore

    hasher = PasswordHasher(CHEAP_ARGON2, workers=1, queue_limit=2)
    try:
        authenticator = Authenticator(
            PgCredentialStore(db),
            hasher,
            lambda: datetime.now(UTC),
            throttle=LoginThrottle(
                PgLoginThrottleStore(db), ThrottlePolicy(delay_base=30.0, delay_max=60.0)
            ),
            max_passwords=1,
        )
        users = [(await new_user(services, "pw", prefix=f"burst-{i}")).username for i in range(12)]
        results = await asyncio.gather(
            *(authenticator.authenticate(name, "pw") for name in users), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, AuthError)]
        assert refused, "the queue should have overflowed"
        assert {r.reason for r in refused} == {Reason.UNAVAILABLE}
        keys = [username_key(name) for name in users]
        rows = await db.fetch("SELECT 1 FROM login_throttle WHERE username_key = ANY($1)", keys)
        assert rows == []
    finally:
        hasher.close()

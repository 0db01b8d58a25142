"""The composition root: the one place that wires settings, storage, domain and transports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from service.config import Settings
from service.domain.authenticator import Authenticator
from service.domain.authorization import AuthorizationService
from service.domain.password_lists import PasswordManager
from service.domain.passwords import PasswordHasher
from service.domain.signing_keys import KeyPolicy, KeyRing
from service.domain.tokens import TokenIssuer, TokenVerifier
from service.domain.users import UserAdmin
from service.errors import AuthError
from service.rpc.health import HealthServicer
from service.rpc.server import build_grpc_server
from service.rpc.servicers import AuthServicer, PasswordServicer, TokenServicer
from service.store.db import Database, create_pool
from service.store.embedded import EmbeddedPostgres
from service.store.passwords import PgCredentialStore, PgPasswordListStore
from service.store.schema import migrate
from service.store.signing_keys import PgKeyStore
from service.store.users import PgUserStore

log = logging.getLogger("authsvc")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Services:
    db: Database
    hasher: PasswordHasher
    keys: KeyRing
    authenticator: Authenticator
    authorization: AuthorizationService
    passwords: PasswordManager
    users: UserAdmin
    verifier: TokenVerifier


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """Connect (starting the embedded PostgreSQL when no URL is set) and bring the schema up to
    date; on exit close the pool and release the embedded server."""
    embedded = None
    dsn = settings.database_url
    if dsn is None:
        embedded = EmbeddedPostgres(settings.data_dir, bin_dir=settings.pg_bin_dir)
        dsn = await asyncio.to_thread(embedded.start)
    try:
        pool = await create_pool(
            dsn, settings.db_pool_min, settings.db_pool_max, settings.db_timeout
        )
        try:
            async with pool.acquire(timeout=settings.db_timeout) as conn:
                await migrate(conn)
            yield Database(pool, settings.db_timeout)
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def open_services(
    db: Database, settings: Settings, clock: Callable[[], datetime] = utc_now
) -> AsyncIterator[Services]:
    hasher = PasswordHasher(settings.argon2, settings.hash_workers, settings.hash_queue_limit)
    try:
        policy = KeyPolicy(
            algorithm=settings.jwt_algorithm,
            rotation=timedelta(days=settings.key_rotation_days),
            publish_ahead=timedelta(seconds=settings.jwks_max_age),
            passphrase=settings.key_encryption_key,
        )
        keys = KeyRing(PgKeyStore(db), policy, clock)
        authenticator = Authenticator(PgCredentialStore(db), hasher, clock)
        issuer = TokenIssuer(keys, settings.token_issuer, clock)
        yield Services(
            db=db,
            hasher=hasher,
            keys=keys,
            authenticator=authenticator,
            authorization=AuthorizationService(authenticator, issuer),
            passwords=PasswordManager(PgPasswordListStore(db), hasher),
            users=UserAdmin(PgUserStore(db), hasher),
            verifier=TokenVerifier(
                keys, PgUserStore(db), settings.token_issuer, settings.token_leeway, clock
            ),
        )
    finally:
        hasher.close()


def grpc_server(services: Services, settings: Settings) -> tuple[grpc.aio.Server, int]:
    return build_grpc_server(
        AuthServicer(services.authorization, settings.api_token_ttl),
        PasswordServicer(services.authenticator, services.passwords),
        TokenServicer(services.verifier, services.keys, settings.jwks_max_age),
        HealthServicer(services.db.ping),
        settings.grpc_addr,
        settings.tls,
    )


# How often each replica checks whether the signing key is due for rotation.
ROTATION_CHECK_SECONDS = 600.0


async def rotate_keys(keys: KeyRing, stop: asyncio.Event) -> None:
    """Every replica checks now and then; the store lets exactly one of them rotate."""
    while not stop.is_set():
        try:
            key = await keys.rotate_if_due()
            if key is not None:
                log.info("scheduled signing key %s to sign from %s", key.kid, key.activates_at)
        except AuthError as exc:
            log.warning("key rotation check failed: %s", exc.message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ROTATION_CHECK_SECONDS)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight RPCs within the grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_database(settings) as db, open_services(db, settings) as services:
        await services.keys.load()
        await services.hasher.prepare()
        server, port = grpc_server(services, settings)
        await server.start()
        host = settings.grpc_addr.rpartition(":")[0]
        log.info("gRPC serving on %s:%d", host, port)
        rotation = asyncio.create_task(rotate_keys(services.keys, stop))
        await stop.wait()
        await rotation
        log.info("stopping: draining in-flight calls for up to %.0fs", settings.shutdown_grace)
        await server.stop(settings.shutdown_grace)
    log.info("stopped")

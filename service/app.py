"""The composition root: the one place that wires settings, storage, domain and transports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from service.config import Settings
from service.domain.authenticator import Authenticator
from service.domain.authorization import AuthorizationService
from service.domain.password_lists import PasswordManager
from service.domain.password_policy import PasswordPolicy
from service.domain.passwords import PasswordHasher
from service.domain.signing_keys import KeyPolicy, KeyRing
from service.domain.throttle import LoginThrottle, ThrottlePolicy
from service.domain.tokens import TokenIssuer, TokenVerifier
from service.domain.users import UserAdmin
from service.errors import AuthError
from service.gateway.server import run_gateway, serving_gateway, tls_context
from service.rpc.health import HealthServicer
from service.rpc.server import build_grpc_server
from service.rpc.servicers import AuthServicer, PasswordServicer, TokenServicer
from service.store.db import Database, create_pool
from service.store.embedded import EmbeddedPostgres
from service.store.login_throttle import PgLoginThrottleStore
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
    throttle: LoginThrottle


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
        throttle = LoginThrottle(
            PgLoginThrottleStore(db),
            ThrottlePolicy(
                delay_base=settings.failed_login_delay_base,
                delay_max=settings.failed_login_delay_max,
                lockout_threshold=settings.lockout_threshold,
                lockout_duration=settings.lockout_duration,
            ),
        )
        max_age = settings.password_max_age
        authenticator = Authenticator(
            PgCredentialStore(db),
            hasher,
            clock,
            throttle=throttle,
            password_max_age=timedelta(seconds=max_age) if max_age else None,
            max_passwords=settings.max_passwords,
        )
        password_policy = PasswordPolicy(
            complexity=settings.password_complexity,
            min_length=settings.password_min_length,
            blocklist=settings.password_blocklist,
            blocklist_file=settings.password_blocklist_file,
        )
        issuer = TokenIssuer(keys, settings.token_issuer, settings.token_audience, clock)
        yield Services(
            db=db,
            hasher=hasher,
            keys=keys,
            authenticator=authenticator,
            authorization=AuthorizationService(authenticator, issuer),
            passwords=PasswordManager(
                PgPasswordListStore(db), hasher, password_policy, settings.max_passwords
            ),
            users=UserAdmin(PgUserStore(db), hasher, password_policy, throttle),
            verifier=TokenVerifier(
                keys,
                PgUserStore(db),
                settings.token_issuer,
                settings.token_audience,
                settings.token_leeway,
                clock,
            ),
            throttle=throttle,
        )
    finally:
        hasher.close()


def grpc_server(
    services: Services, settings: Settings, internal_address: str | None = None
) -> tuple[grpc.aio.Server, int]:
    """The gRPC server on `settings.grpc_addr`, and also on `internal_address` (the private
    socket of the in-process gateway) when given."""
    return build_grpc_server(
        AuthServicer(services.authorization, settings.api_token_ttl),
        PasswordServicer(services.authenticator, services.passwords),
        TokenServicer(services.verifier, services.keys, settings.jwks_max_age),
        HealthServicer(services.db.ping),
        settings.grpc_addr,
        settings.tls,
        internal_address,
    )


# How often each replica checks whether the signing key is due for rotation, and deletes
# login-throttle rows whose delay and lock have long passed.
ROTATION_CHECK_SECONDS = 600.0
THROTTLE_PURGE_SECONDS = 600.0


async def every(
    seconds: float, stop: asyncio.Event, what: str, action: Callable[[], Awaitable[object]]
) -> None:
    """Run `action` now and every `seconds` until `stop`; a failure is logged and retried at
    the next turn, never the end of the loop."""
    while not stop.is_set():
        try:
            await action()
        except AuthError as exc:
            log.warning("%s failed: %s", what, exc.message)
        except Exception:
            log.exception("%s failed", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def rotate_keys(keys: KeyRing) -> None:
    """Every replica checks now and then; the store lets exactly one of them rotate."""
    key = await keys.rotate_if_due()
    if key is not None:
        log.info("scheduled signing key %s to sign from %s", key.kid, key.activates_at)


async def purge_login_throttle(throttle: LoginThrottle) -> None:
    """Keep the failed-login table from growing with every name a password spray tries."""
    purged = await throttle.purge_stale()
    if purged:
        log.info("purged %d stale failed-login records", purged)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight calls within the grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_database(settings) as db, open_services(db, settings) as services:
        await services.keys.load()
        await services.hasher.prepare()
        with tempfile.TemporaryDirectory(prefix="authsvc-") as private_dir:
            # The in-process gateway reaches the servicers over a Unix socket in a 0700
            # directory: no TLS client certificate needed, and no other local user can connect.
            internal = f"unix:{private_dir}/grpc.sock"
            server, port = grpc_server(services, settings, internal)
            await server.start()
            chores = [
                asyncio.create_task(
                    every(
                        ROTATION_CHECK_SECONDS,
                        stop,
                        "key rotation check",
                        lambda: rotate_keys(services.keys),
                    )
                ),
                asyncio.create_task(
                    every(
                        THROTTLE_PURGE_SECONDS,
                        stop,
                        "failed-login purge",
                        lambda: purge_login_throttle(services.throttle),
                    )
                ),
            ]
            try:
                host = settings.grpc_addr.rpartition(":")[0]
                log.info("gRPC serving on %s:%d", host, port)
                async with serving_gateway(
                    internal,
                    settings.http_addr,
                    ssl_context=gateway_tls(settings),
                    shutdown_timeout=settings.shutdown_grace,
                ):
                    await stop.wait()
                    log.info(
                        "stopping: draining in-flight calls for up to %.0fs",
                        settings.shutdown_grace,
                    )
            finally:
                stop.set()  # also when the gateway could not start: wind everything down
                await server.stop(settings.shutdown_grace)
                await asyncio.gather(*chores)
    log.info("stopped")


def gateway_tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls is None:
        return None
    return tls_context(settings.tls.cert_file, settings.tls.key_file, settings.tls.client_ca_file)


def upstream_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS (and an mTLS client certificate) for a standalone gateway's calls to the server."""
    upstream = settings.gateway_upstream
    if upstream is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=upstream.ca_file.read_bytes(),
        private_key=upstream.client_key_file.read_bytes() if upstream.client_key_file else None,
        certificate_chain=(
            upstream.client_cert_file.read_bytes() if upstream.client_cert_file else None
        ),
    )


async def run_standalone_gateway(settings: Settings, grpc_target: str) -> None:
    """`authsvc gateway`: only the HTTP shim, in front of a gRPC server elsewhere."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_gateway(
        grpc_target,
        settings.http_addr,
        stop,
        ssl_context=gateway_tls(settings),
        shutdown_timeout=settings.shutdown_grace,
        credentials=upstream_credentials(settings),
    )

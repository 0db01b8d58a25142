"""The composition root: the one place that wires settings, storage, domain and transports."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from service.addresses import check_listenable, safe_dsn, with_port
from service.apidocs.discovery import Discovery
from service.config import Settings
from service.domain.audit import SERVER_SOURCE, Auditor, AuditPolicy
from service.domain.authenticator import Authenticator
from service.domain.authorization import AuthorizationService
from service.domain.password_lists import PasswordManager
from service.domain.password_policy import PasswordPolicy
from service.domain.passwords import PasswordHasher
from service.domain.signing_keys import KeyPolicy, KeyRing
from service.domain.throttle import LoginThrottle, ThrottlePolicy
from service.domain.tokens import TokenIssuer, TokenVerifier
from service.domain.users import UserAdmin
from service.embedded_postgres import EmbeddedPostgres
from service.errors import AuthError
from service.gateway.dispatch import ChannelDispatcher, InProcessDispatcher
from service.http_server import run_gateway, serving_gateway
from service.observability import metrics, startup, tracing
from service.rpc.health import HealthServicer
from service.rpc.server import Servicers, build_grpc_server
from service.rpc.servicers import AuthServicer, PasswordServicer, TokenServicer
from service.store.audit import PgAuditLog
from service.store.db import Database, create_pool
from service.store.login_throttle import PgLoginThrottleStore
from service.store.logins import PgLoginStore
from service.store.passwords import PgPasswordListStore
from service.store.schema import migrate, server_version
from service.store.signing_keys import PgKeyStore, key_changes
from service.store.users import PgUserStore
from service.tls import grpc_channel_credentials, settings_https_context

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
    audit: Auditor


@asynccontextmanager
async def open_database(settings: Settings, *, announce: bool = False) -> AsyncIterator[Database]:
    """Connect (starting the embedded PostgreSQL when no URL is set) and bring the schema up to
    date; on exit close the pool and release the embedded server. With `announce` (a server's
    start-up), log which PostgreSQL it is."""
    embedded = None
    dsn = settings.database_url
    if dsn is None:
        embedded = EmbeddedPostgres(settings.data_dir, bin_dir=settings.pg_bin_dir)
        dsn = await asyncio.to_thread(embedded.start)
    try:
        pool = await create_pool(
            dsn,
            settings.db_pool_min,
            settings.db_pool_max,
            settings.db_timeout,
            settings.db_statement_cache,
        )
        try:
            async with pool.acquire(timeout=settings.db_timeout) as conn:
                await migrate(conn)
                version = await server_version(conn)
            if announce:
                log.info("database: %s", describe_database(version, embedded, dsn))
            yield Database(pool, settings.db_timeout, dsn=settings.db_listen_url or dsn)
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def open_services(
    db: Database,
    settings: Settings,
    clock: Callable[[], datetime] = utc_now,
    *,
    watch_keys: bool = True,
    actor: str = SERVER_SOURCE,
) -> AsyncIterator[Services]:
    """The domain services over `db`. With `watch_keys` (a server), the key ring re-reads the
    key table as soon as any process changes it; a one-shot command has no need. `actor` is
    the audit trail's source for what no call asked for (`cli:NAME` for a command)."""
    audit = Auditor(
        PgAuditLog(db),
        AuditPolicy(logins=settings.audit_logins, retention_days=settings.audit_retention_days),
        actor,
    )
    hasher = PasswordHasher(
        settings.argon2,
        settings.hash_workers,
        settings.hash_queue_limit,
        on_job_seconds=metrics.HASH_SECONDS.observe,
        on_job=tracing.hash_job_observer(),
    )
    try:
        policy = KeyPolicy(
            algorithm=settings.jwt_algorithm,
            rotation=timedelta(days=settings.key_rotation_days),
            publish_ahead=timedelta(seconds=settings.jwks_max_age),
            passphrase=settings.key_encryption_key,
        )
        keys = KeyRing(PgKeyStore(db), policy, clock, audit)
        listening = (
            key_changes(db.dsn, keys.changed, settings.db_timeout)
            if watch_keys and db.dsn is not None
            else contextlib.nullcontext()
        )
        throttle = LoginThrottle(
            ThrottlePolicy(
                allowance=settings.failed_login_allowance,
                source_allowance=settings.source_failure_allowance,
                delay_base=settings.failed_login_delay_base,
                delay_max=settings.failed_login_delay_max,
                lockout_threshold=settings.lockout_threshold,
                lockout_duration=settings.lockout_duration,
            ),
            PgLoginThrottleStore(db),
        )
        max_age = settings.password_max_age
        authenticator = Authenticator(
            PgLoginStore(db),
            hasher,
            throttle,
            clock,
            password_max_age=timedelta(seconds=max_age) if max_age else None,
            audit=audit,
        )
        password_policy = PasswordPolicy(
            complexity=settings.password_complexity,
            min_length=settings.password_min_length,
            blocklist=settings.password_blocklist,
            blocklist_file=settings.password_blocklist_file,
        )
        issuer = TokenIssuer(
            keys,
            settings.token_issuer,
            settings.token_audience,
            clock,
            api_groups=frozenset(settings.api_groups) if settings.api_groups else None,
        )
        async with listening:
            yield Services(
                db=db,
                hasher=hasher,
                keys=keys,
                authenticator=authenticator,
                authorization=AuthorizationService(authenticator, issuer, audit),
                passwords=PasswordManager(
                    PgPasswordListStore(db),
                    hasher,
                    password_policy,
                    settings.max_passwords,
                    settings.password_history,
                    audit,
                ),
                users=UserAdmin(PgUserStore(db), hasher, password_policy, throttle, audit),
                verifier=TokenVerifier(
                    keys,
                    PgUserStore(db),
                    settings.token_issuer,
                    settings.token_audience,
                    settings.token_leeway,
                    clock,
                ),
                throttle=throttle,
                audit=audit,
            )
    finally:
        await audit.drain()  # the background writes, while the pool is still open
        hasher.close()


def build_servicers(services: Services, settings: Settings) -> Servicers:
    return Servicers(
        auth=AuthServicer(services.authorization, settings.api_token_ttl, settings.trusted_proxies),
        passwords=PasswordServicer(
            services.authenticator, services.passwords, settings.trusted_proxies
        ),
        tokens=TokenServicer(services.verifier, services.keys, settings.jwks_max_age),
        health=HealthServicer(services.db.ping),
    )


def grpc_server(
    services: Services, settings: Settings, servicers: Servicers | None = None
) -> tuple[grpc.aio.Server, int]:
    """The gRPC server on `settings.grpc_addr`, serving `servicers` (built here if not given)."""
    if servicers is None:
        servicers = build_servicers(services, settings)
    return build_grpc_server(
        servicers, settings.grpc_addr, settings.tls, interceptors=tracing.grpc_interceptors()
    )


def in_process_gateway(servicers: Servicers) -> InProcessDispatcher:
    """The REST gateway's dispatcher for `serve`: the very servicer objects the gRPC server has."""
    return InProcessDispatcher(servicers.by_service())


# How often each replica checks whether the signing key is due for rotation, and deletes
# login-throttle rows whose delay and lock have long passed and audit events past retention.
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
            async with asyncio.timeout(seconds):  # not wait_for: see store/signing_keys.py
                await stop.wait()


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


async def purge_audit_trail(audit: Auditor) -> None:
    """Delete audit events older than AUTHSVC_AUDIT_RETENTION_DAYS, a batch at a time."""
    purged = await audit.purge_expired()
    if purged:
        log.info("purged %d audit events older than %d days", purged, audit.policy.retention_days)


async def purge_stale_records(services: Services) -> None:
    """The periodic purge: failed-login counts, then the audit trail (each even if the other
    fails)."""
    try:
        await purge_login_throttle(services.throttle)
    finally:
        await purge_audit_trail(services.audit)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight calls within the grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for line in startup.changed_settings(settings):
        log.info("setting %s", line)
    with (
        tracing.exporting(settings.tracing),  # first: its configuration errors are exit 2
        listening_checked(settings),
        serving_metrics(settings.metrics_addr),
    ):
        async with (
            open_database(settings, announce=True) as db,
            open_services(db, settings) as services,
        ):
            await services.keys.load()
            servicers = build_servicers(services, settings)
            server, port = grpc_server(services, settings, servicers)
            await server.start()
            state = metrics.register_state(state_sources(services, settings))
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
                        "failed-login and audit purge",
                        lambda: purge_stale_records(services),
                    )
                ),
            ]
            try:
                log.info("gRPC serving on %s", with_port(settings.grpc_addr, port))
                async with serving_gateway(
                    in_process_gateway(servicers),
                    settings.http_addr,
                    ssl_context=settings_https_context(settings.tls),
                    shutdown_timeout=settings.shutdown_grace,
                    trusted_proxies=settings.trusted_proxies,
                    discovery=discovery(settings),
                    middlewares=tracing.http_middlewares(),
                ):
                    # What start-up made lives as long as the process: out of the cyclic
                    # collector's way, so that its full collections walk only what calls make.
                    gc.collect()
                    gc.freeze()
                    await stop.wait()
                    log.info(
                        "stopping: draining in-flight calls for up to %.0fs",
                        settings.shutdown_grace,
                    )
            finally:
                stop.set()  # also when the gateway could not start: wind everything down
                await servicers.health.shutdown()  # NOT_SERVING, and Watch streams end, first
                await server.stop(settings.shutdown_grace)
                await asyncio.gather(*chores)
                metrics.unregister_state(state)
    log.info("stopped")


@contextlib.contextmanager
def listening_checked(settings: Settings) -> Iterator[None]:
    """A busy port stops start-up in one line, before the database is opened."""
    check_listenable(settings.grpc_addr, "gRPC")
    check_listenable(settings.http_addr, "HTTP")
    yield


@contextlib.contextmanager
def serving_metrics(address: str | None) -> Iterator[None]:
    """The Prometheus listener, bound before the database is opened: a busy port stops
    start-up in one line."""
    if address is None:
        yield
        return
    server = metrics.MetricsServer(address)
    log.info("metrics serving on %s (GET /metrics)", with_port(address, server.port))
    try:
        yield
    finally:
        server.close()


def describe_database(version: str, embedded: EmbeddedPostgres | None, dsn: str) -> str:
    """Which PostgreSQL: the embedded one's binaries and data folder, or the URL's host."""
    if embedded is not None:
        return (
            f"embedded PostgreSQL {version}, binaries {embedded.binaries()},"
            f" data {embedded.data_dir}"
        )
    return f"PostgreSQL {version} at {safe_dsn(dsn)}"


def state_sources(services: Services, settings: Settings) -> metrics.StateSources:
    pool = services.db.pool
    return metrics.StateSources(
        hash_in_flight=lambda: services.hasher.in_flight,
        hash_running=lambda: services.hasher.running,
        hash_workers=services.hasher.workers,
        pool_size=pool.get_size,
        pool_idle=pool.get_idle_size,
        pool_max=settings.db_pool_max,
        signing_created_at=lambda: services.keys.signing_created_at,
    )


def discovery(settings: Settings) -> Discovery:
    """What the REST discovery documents say: the tokens' issuer and algorithm, the public URL."""
    return Discovery(settings.token_issuer, settings.jwt_algorithm, settings.public_url)


async def run_standalone_gateway(settings: Settings, grpc_target: str) -> None:
    """`authsvc gateway`: only the HTTP shim, in front of a gRPC server elsewhere."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    check_listenable(settings.http_addr, "HTTP")
    with tracing.exporting(settings.tracing):
        await run_gateway(
            ChannelDispatcher(
                grpc_target,
                grpc_channel_credentials(upstream)
                if (upstream := settings.gateway_upstream)
                else None,
            ),
            settings.http_addr,
            stop,
            ssl_context=settings_https_context(settings.tls),
            shutdown_timeout=settings.shutdown_grace,
            trusted_proxies=settings.trusted_proxies,
            discovery=discovery(settings),
            middlewares=tracing.http_middlewares(),
        )

"""Settings: the only module that reads the environment.

Every knob is an `AUTHSVC_*` variable with a safe default (tracing alone follows OpenTelemetry's
`OTEL_*` variables, `_tracing`). A bad value raises `ConfigError` whose
message is one line naming the variable, which the CLI prints before exiting with status 2. The
rules' defaults and bounds are the domain's: they are imported from it, never restated here.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from service.addresses import is_loopback, split_address
from service.client_address import IPNetwork
from service.domain.audit import AuditPolicy
from service.domain.password_lists import HISTORY_DEFAULT, MAX_PASSWORDS_DEFAULT
from service.domain.password_policy import PasswordPolicy
from service.domain.passwords import Argon2Parameters
from service.domain.signing_keys import JWT_ALGORITHMS, KeyPolicy
from service.domain.throttle import ThrottlePolicy
from service.domain.token_lifetime import TTL_DEFAULT, TTL_MAX, TTL_MIN
from service.domain.tokens import LEEWAY_DEFAULT

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration variable has a value that cannot be used."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and (for mTLS) the CA whose
    certificates clients must present on the gRPC listener."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True)
class UpstreamTls:
    """How a standalone gateway (`authsvc gateway`) reaches a TLS gRPC server: the CA to trust,
    and the client certificate to present when the server requires mTLS."""

    ca_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".data")
    pg_bin_dir: Path | None = None
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    token_issuer: str = "authsvc"
    # The service's public base URL ("https://auth.example.com"): the absolute URLs of the
    # discovery document. Unset: built from each request's Host and scheme.
    public_url: str | None = None
    token_audience: str = "authsvc"
    api_token_ttl: int = TTL_DEFAULT
    jwt_algorithm: str = KeyPolicy.algorithm
    argon2: Argon2Parameters = field(default_factory=Argon2Parameters)
    hash_workers: int = os.cpu_count() or 1
    hash_queue_limit: int = 256
    db_pool_min: int = 1
    db_pool_max: int = 10
    db_timeout: float = 5.0
    # asyncpg's prepared-statement cache per connection (its default, 100); 0 behind PgBouncer in
    # transaction mode, where a connection's next statement may run on another server session.
    db_statement_cache: int = 100
    # Where the LISTEN for signing-key changes connects (default: database_url). LISTEN needs a
    # session of its own, so behind PgBouncer in transaction mode set a URL that bypasses it
    # (HAProxy's PostgreSQL port, or the primary); without one, changes arrive by the key
    # ring's periodic re-read.
    db_listen_url: str | None = None
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    # Operations: `json` or `text` log lines; Prometheus `GET /metrics` on `metrics_addr`
    # (None: no metrics listener).
    log_format: str = "text"
    metrics_addr: str | None = "127.0.0.1:9464"
    # OpenTelemetry tracing: on when the standard OTEL_* variables name a trace exporter
    # (`_tracing`); the SDK reads the rest of its variables itself.
    tracing: bool = False
    # Tokens: signing keys rotate every `key_rotation_days`; a scheduled new key is published
    # `jwks_max_age` seconds before it signs (the JWKS cache lifetime), so cached key sets
    # always hold it; `token_leeway` seconds of clock skew are tolerated when verifying.
    key_rotation_days: int = KeyPolicy.rotation.days
    jwks_max_age: int = int(KeyPolicy.publish_ahead.total_seconds())
    token_leeway: int = LEEWAY_DEFAULT
    key_encryption_key: str | None = field(default=None, repr=False)
    tls: TlsFiles | None = None
    allow_plaintext: bool = False
    gateway_upstream: UpstreamTls | None = None
    # Peers (IP networks) whose X-Forwarded-For / Forwarded header (REST) or `x-forwarded-for`
    # metadata (gRPC) names the real client; nobody else's is believed. Empty by default.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Groups whose members' tokens get the `api` scope (Densify's API-enabled users); empty:
    # every user's token does.
    api_groups: tuple[str, ...] = ()
    # Brute-force defence (see service/domain/throttle.py): the first `allowance` consecutive
    # failures of a name from a source (`source_failure_allowance` of a source across names)
    # cost nothing; after the n-th, the next attempt waits min(base * 2^(n-allowance-1), max)
    # seconds; base 0 turns the delays off. Every `lockout_threshold`-th consecutive failure
    # (0: never) locks the name's count for `lockout_duration`.
    failed_login_allowance: int = ThrottlePolicy.allowance
    source_failure_allowance: int = ThrottlePolicy.source_allowance
    failed_login_delay_base: float = ThrottlePolicy.delay_base
    failed_login_delay_max: float = ThrottlePolicy.delay_max
    lockout_threshold: int = ThrottlePolicy.lockout_threshold
    lockout_duration: float = ThrottlePolicy.lockout_duration
    # New passwords: Redis Enterprise's complexity rules when on; `password_max_age` seconds
    # (0: never) after which a password gets no token but can still change the password list.
    password_complexity: bool = PasswordPolicy.complexity
    password_min_length: int = PasswordPolicy.min_length
    password_max_age: int = 0
    # The list of common and breached passwords new passwords are checked against (the domain's
    # default: on), and an operator's own extra list (UTF-8, one password per line).
    password_blocklist: bool = PasswordPolicy.blocklist
    password_blocklist_file: Path | None = None
    # How many passwords one user may hold at once: a bound for storage (a login costs one hash
    # however long the list is). `password_history`: how many retired passwords a new one may
    # not repeat (0: off).
    max_passwords: int = MAX_PASSWORDS_DEFAULT
    password_history: int = HISTORY_DEFAULT
    # The audit trail (service/domain/audit.py): successful logins too (a write each: off by
    # default), and how many days events are kept.
    audit_logins: bool = AuditPolicy.logins
    audit_retention_days: int = AuditPolicy.retention_days


N = TypeVar("N", int, float)


def _number(kind: Callable[[str], N], noun: str, lo: N, hi: N) -> Callable[[str], N]:
    def parse(raw: str) -> N:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"must be {noun}, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _int(lo: int, hi: int) -> Callable[[str], int]:
    return _number(int, "an integer", lo, hi)


def _float(lo: float, hi: float) -> Callable[[str], float]:
    return _number(float, "a number", lo, hi)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        for choice in choices:
            if raw.lower() == choice.lower():
                return choice
        raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")

    return parse


def _address(raw: str) -> str:
    host, _ = split_address(raw)
    if not host:
        raise ValueError(f"must be HOST:PORT, got {raw!r}")
    return raw


def _base_url(raw: str) -> str:
    url = urlsplit(raw.strip())
    if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
        raise ValueError(f"must be an http(s) URL with no query or fragment, got {raw!r}")
    return raw.strip().rstrip("/")


def _secret(min_chars: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if len(raw) < min_chars:
            raise ValueError(f"must be at least {min_chars} characters")
        return raw

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _readable_file(raw: str) -> Path | None:
    path = Path(raw)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {raw!r}")
    return path


def _text_file(raw: str) -> Path | None:
    """A readable UTF-8 file: checked here so that a bad one stops start-up naming the variable."""
    path = _readable_file(raw)
    try:
        Path(raw).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{raw!r} is not UTF-8 text") from None
    return path


def _tls_files(cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsFiles | None:
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(
                "AUTHSVC_TLS_CLIENT_CA_FILE: needs AUTHSVC_TLS_CERT_FILE and _KEY_FILE"
            )
        return None
    if cert is None or key is None:
        missing = "AUTHSVC_TLS_CERT_FILE" if cert is None else "AUTHSVC_TLS_KEY_FILE"
        raise ConfigError(f"{missing}: TLS needs both a certificate and a key file")
    return TlsFiles(cert_file=cert, key_file=key, client_ca_file=client_ca)


def _upstream_tls(ca: Path | None, cert: Path | None, key: Path | None) -> UpstreamTls | None:
    if (cert is None) != (key is None):
        missing = "CERT" if cert is None else "KEY"
        raise ConfigError(f"AUTHSVC_GATEWAY_CLIENT_{missing}_FILE: mTLS needs both files")
    if ca is None:
        if cert is not None:
            raise ConfigError("AUTHSVC_GATEWAY_CA_FILE: a client certificate needs TLS")
        return None
    return UpstreamTls(ca_file=ca, client_cert_file=cert, client_key_file=key)


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated IP addresses or CIDR networks ("10.0.0.0/8, 192.0.2.7, ::1"); an
    IPv4-mapped IPv6 network is its IPv4 network, as a mapped peer is read as IPv4."""
    networks: list[IPNetwork] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or network: {item.strip()!r}") from None
        mapped = network.network_address.ipv4_mapped if network.version == 6 else None
        if mapped is not None and network.prefixlen >= 96:
            network = ipaddress.ip_network((mapped, network.prefixlen - 96))
        networks.append(network)
    return tuple(networks)


def _groups(raw: str) -> tuple[str, ...]:
    """Comma-separated group names (as `authsvc user groups` takes them)."""
    from service.domain.groups import check_group  # the domain owns the rule
    from service.errors import AuthError

    names = tuple(sorted({item.strip() for item in raw.split(",") if item.strip()}))
    for name in names:
        try:
            check_group(name)
        except AuthError as exc:
            raise ValueError(exc.message) from None
    return names


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw


def _database_url(raw: str) -> str:
    """A PostgreSQL URL asyncpg can take apart; the message never repeats it (it may hold a
    password)."""
    shape = "must be postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        url = urlsplit(raw.strip())
        # libpq's host list (h1:5432,h2:5432, as asyncpg takes it): each HOST[:PORT] readable.
        for host in url.netloc.rpartition("@")[2].split(","):
            urlsplit(f"//{host}").port  # noqa: B018 (raises for a bad port or an odd bracket)
    except ValueError:
        raise ValueError(f"{shape} (its host or port cannot be read)") from None
    if url.scheme not in ("postgresql", "postgres"):
        raise ValueError(shape)
    return raw.strip()


class _Environment:
    """The `AUTHSVC_*` variables of one environment, each parsed or reported in one line."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def is_empty(self, name: str) -> bool:
        """Set, to the empty string (a way to turn something off)."""
        return self._env.get(f"AUTHSVC_{name}") == ""

    def __call__(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._env.get(f"AUTHSVC_{name}")
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"AUTHSVC_{name}: {exc}") from None


def _storage(get: _Environment, s: Settings) -> Settings:
    """Where the data lives, and how the pool reaches it."""
    pg_bin = get("PG_BIN_DIR", _text, "")
    return replace(
        s,
        database_url=get("DATABASE_URL", _database_url, "") or None,
        data_dir=Path(get("DATA_DIR", _text, str(s.data_dir))),
        pg_bin_dir=Path(pg_bin) if pg_bin else None,
        db_pool_min=get("DB_POOL_MIN", _int(0, 1000), s.db_pool_min),
        db_pool_max=get("DB_POOL_MAX", _int(1, 1000), s.db_pool_max),
        db_timeout=get("DB_TIMEOUT", _float(0.1, 600), s.db_timeout),
        db_statement_cache=get("DB_STATEMENT_CACHE", _int(0, 100_000), s.db_statement_cache),
        db_listen_url=get("DB_LISTEN_URL", _text, "") or None,
    )


def _listeners(get: _Environment, s: Settings) -> Settings:
    """Where the service listens, over what TLS, whom it believes about client addresses, and
    how a standalone gateway reaches the server."""
    return replace(
        s,
        grpc_addr=get("GRPC_ADDR", _address, s.grpc_addr),
        http_addr=get("HTTP_ADDR", _address, s.http_addr),
        public_url=get("PUBLIC_URL", _base_url, None),
        shutdown_grace=get("SHUTDOWN_GRACE", _float(0, 3600), s.shutdown_grace),
        tls=_tls_files(
            get("TLS_CERT_FILE", _readable_file, None),
            get("TLS_KEY_FILE", _readable_file, None),
            get("TLS_CLIENT_CA_FILE", _readable_file, None),
        ),
        allow_plaintext=get("ALLOW_PLAINTEXT", _bool, False),
        gateway_upstream=_upstream_tls(
            get("GATEWAY_CA_FILE", _readable_file, None),
            get("GATEWAY_CLIENT_CERT_FILE", _readable_file, None),
            get("GATEWAY_CLIENT_KEY_FILE", _readable_file, None),
        ),
        trusted_proxies=get("TRUSTED_PROXIES", _networks, s.trusted_proxies),
    )


def _tokens(get: _Environment, s: Settings) -> Settings:
    """What tokens say and how long they live, and the keys that sign them."""
    return replace(
        s,
        token_issuer=get("TOKEN_ISSUER", _text, s.token_issuer),
        token_audience=get("TOKEN_AUDIENCE", _text, s.token_audience),
        api_token_ttl=get("API_TOKEN_TTL", _int(TTL_MIN, TTL_MAX), s.api_token_ttl),
        jwt_algorithm=get("JWT_ALGORITHM", _choice(*JWT_ALGORITHMS), s.jwt_algorithm),
        key_rotation_days=get("KEY_ROTATION_DAYS", _int(1, 3650), s.key_rotation_days),
        jwks_max_age=get("JWKS_MAX_AGE", _int(0, 86400), s.jwks_max_age),
        token_leeway=get("TOKEN_LEEWAY", _int(0, 300), s.token_leeway),
        key_encryption_key=get("KEY_ENCRYPTION_KEY", _secret(16), None),
        api_groups=get("API_GROUPS", _groups, s.api_groups),
    )


def _hashing(get: _Environment, s: Settings) -> Settings:
    """The argon2id cost, and how many hashes run and wait at once."""
    argon2 = Argon2Parameters(
        time_cost=get("ARGON2_TIME_COST", _int(1, 100), s.argon2.time_cost),
        memory_kib=get("ARGON2_MEMORY_KIB", _int(8, 4 * 1024 * 1024), s.argon2.memory_kib),
        parallelism=get("ARGON2_PARALLELISM", _int(1, 64), s.argon2.parallelism),
    )
    if argon2.memory_kib < 8 * argon2.parallelism:
        raise ConfigError(
            "AUTHSVC_ARGON2_MEMORY_KIB: must be at least 8 * AUTHSVC_ARGON2_PARALLELISM"
        )
    return replace(
        s,
        argon2=argon2,
        hash_workers=get("HASH_WORKERS", _int(1, 256), s.hash_workers),
        hash_queue_limit=get("HASH_QUEUE_LIMIT", _int(1, 100_000), s.hash_queue_limit),
    )


def _login_defence(get: _Environment, s: Settings) -> Settings:
    """The brute-force defence: allowances, delays and the lock."""
    return replace(
        s,
        failed_login_allowance=get(
            "FAILED_LOGIN_ALLOWANCE", _int(0, 1000), s.failed_login_allowance
        ),
        source_failure_allowance=get(
            "SOURCE_FAILURE_ALLOWANCE", _int(0, 100_000), s.source_failure_allowance
        ),
        failed_login_delay_base=get(
            "FAILED_LOGIN_DELAY_BASE", _float(0, 3600), s.failed_login_delay_base
        ),
        failed_login_delay_max=get(
            "FAILED_LOGIN_DELAY_MAX", _float(0, 86400), s.failed_login_delay_max
        ),
        lockout_threshold=get("LOCKOUT_THRESHOLD", _int(0, 1000), s.lockout_threshold),
        lockout_duration=get("LOCKOUT_DURATION", _float(1, 365 * 86400), s.lockout_duration),
    )


def _passwords(get: _Environment, s: Settings) -> Settings:
    """Rules for new passwords, their age, and how many a user holds and may not repeat."""
    return replace(
        s,
        password_complexity=get("PASSWORD_COMPLEXITY", _bool, s.password_complexity),
        password_min_length=get("PASSWORD_MIN_LENGTH", _int(8, 1024), s.password_min_length),
        password_max_age=get("PASSWORD_MAX_AGE", _int(0, 100 * 365 * 86400), s.password_max_age),
        password_blocklist=get("PASSWORD_BLOCKLIST", _bool, s.password_blocklist),
        password_blocklist_file=get("PASSWORD_BLOCKLIST_FILE", _text_file, None),
        max_passwords=get("MAX_PASSWORDS", _int(1, 1024), s.max_passwords),
        password_history=get("PASSWORD_HISTORY", _int(0, 1024), s.password_history),
    )


def _logging(get: _Environment, s: Settings) -> Settings:
    """Logs and metrics: the level and format of log lines, and where Prometheus scrapes."""
    level = _choice("DEBUG", "INFO", "WARNING", "ERROR")
    return replace(
        s,
        log_level=get("LOG_LEVEL", level, s.log_level),
        log_format=get("LOG_FORMAT", _choice("json", "text"), s.log_format),
        # Set but empty turns the metrics listener off.
        metrics_addr=(
            None if get.is_empty("METRICS_ADDR") else get("METRICS_ADDR", _address, s.metrics_addr)
        ),
    )


# The OpenTelemetry variables that decide whether spans are exported at all. Everything else
# (endpoint, protocol, headers, sampler, resource, batch sizes) the SDK and its exporters read
# from the environment themselves, by the specification's names: not restated here.
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_EXPORTER_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def _tracing(env: Mapping[str, str], s: Settings) -> Settings:
    """Tracing is off unless an exporter is configured: OTEL_TRACES_EXPORTER names one (not
    `none`), or an OTLP endpoint is set (the SDK's default exporter is then OTLP). The SDK's own
    default, OTLP to localhost, would otherwise make every run try a collector nobody started.
    OTEL_SDK_DISABLED=true turns it off whatever else is set, as the specification says."""
    if env.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return replace(s, tracing=False)
    exporter = env.get(OTEL_TRACES_EXPORTER, "").strip().lower()
    if exporter:
        return replace(s, tracing=exporter != "none")
    endpoint = any(env.get(name, "").strip() for name in OTEL_EXPORTER_OTLP_ENDPOINTS)
    return replace(s, tracing=endpoint)


def _audit(get: _Environment, s: Settings) -> Settings:
    """The audit trail: whether successful logins are recorded, and how long events are kept."""
    return replace(
        s,
        audit_logins=get("AUDIT_LOGINS", _bool, s.audit_logins),
        audit_retention_days=get("AUDIT_RETENTION_DAYS", _int(1, 36500), s.audit_retention_days),
    )


def _check_together(settings: Settings) -> None:
    """The rules that span several variables."""
    if settings.tls is None and not settings.allow_plaintext:
        for name, address in (("GRPC_ADDR", settings.grpc_addr), ("HTTP_ADDR", settings.http_addr)):
            if not is_loopback(address):
                raise ConfigError(
                    f"AUTHSVC_{name}: plaintext on a non-loopback address; set"
                    " AUTHSVC_TLS_CERT_FILE and AUTHSVC_TLS_KEY_FILE"
                    " (or AUTHSVC_ALLOW_PLAINTEXT=true)"
                )
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError("AUTHSVC_DB_POOL_MIN: must not exceed AUTHSVC_DB_POOL_MAX")
    if settings.failed_login_delay_max < settings.failed_login_delay_base:
        raise ConfigError(
            "AUTHSVC_FAILED_LOGIN_DELAY_MAX: must not be less than AUTHSVC_FAILED_LOGIN_DELAY_BASE"
        )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment), one concern at a time."""
    environment = os.environ if env is None else env
    get = _Environment(environment)
    settings = Settings()
    for section in (
        _hashing,
        _storage,
        _listeners,
        _tokens,
        _login_defence,
        _passwords,
        _logging,
        _audit,
    ):
        settings = section(get, settings)
    settings = _tracing(environment, settings)
    _check_together(settings)
    return settings

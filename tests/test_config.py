"""Configuration: every AUTHSVC_* variable read into the domain's types, its defaults the
domain's, and a bad value one line naming the variable (service/config.py)."""

from __future__ import annotations

import inspect
from datetime import timedelta
from pathlib import Path

import pytest

from service.config import ConfigError, Settings, TlsFiles, load_settings
from service.domain.password_lists import HISTORY_DEFAULT, MAX_PASSWORDS_DEFAULT, PasswordManager
from service.domain.password_policy import PasswordPolicy
from service.domain.passwords import Argon2Parameters
from service.domain.signing_keys import KeyPolicy
from service.domain.throttle import ThrottlePolicy
from service.domain.token_lifetime import TTL_DEFAULT
from service.domain.tokens import LEEWAY_DEFAULT
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_plaintext_off_loopback_is_refused() -> None:
    """Listening in plaintext on a non-loopback address stops start-up, naming the variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHSVC_GRPC_ADDR": "0.0.0.0:50051"})
    assert str(caught.value).startswith("AUTHSVC_GRPC_ADDR: plaintext")
    assert load_settings(
        {"AUTHSVC_GRPC_ADDR": "0.0.0.0:50051", "AUTHSVC_ALLOW_PLAINTEXT": "true"}
    ).allow_plaintext
    assert load_settings({"AUTHSVC_GRPC_ADDR": "[::1]:50051"}).tls is None


def test_tls_settings_need_both_files(pki) -> None:
    """A certificate without its key is a one-line configuration error."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHSVC_TLS_CERT_FILE": str(pki.server_cert)})
    assert str(caught.value).startswith("AUTHSVC_TLS_KEY_FILE:")
    settings = load_settings(
        {
            "AUTHSVC_TLS_CERT_FILE": str(pki.server_cert),
            "AUTHSVC_TLS_KEY_FILE": str(pki.server_key),
            "AUTHSVC_GRPC_ADDR": "0.0.0.0:1",
            "AUTHSVC_HTTP_ADDR": "0.0.0.0:2",
        }
    )
    assert settings.tls == TlsFiles(pki.server_cert, pki.server_key)


def test_the_blocklist_is_on_by_default_in_the_domain_and_the_settings() -> None:
    """The domain owns the default (on); the settings take it from there."""
    assert PasswordPolicy().blocklist is True
    assert Settings().password_blocklist is PasswordPolicy().blocklist
    assert load_settings({}).password_blocklist is True
    assert load_settings({}).password_blocklist_file is None


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("off", False), ("true", True)])
def test_the_setting_reads_the_environment(raw: str, expected: bool) -> None:
    """AUTHSVC_PASSWORD_BLOCKLIST takes the usual boolean spellings."""
    assert load_settings({"AUTHSVC_PASSWORD_BLOCKLIST": raw}).password_blocklist is expected


def test_a_bad_setting_names_the_variable() -> None:
    """A value that is not a boolean stops start-up with one line naming the variable."""
    with pytest.raises(ConfigError, match=r"^AUTHSVC_PASSWORD_BLOCKLIST: must be true or false"):
        load_settings({"AUTHSVC_PASSWORD_BLOCKLIST": "maybe"})


def test_the_file_setting_reads_a_readable_utf8_file(tmp_path: Path) -> None:
    """AUTHSVC_PASSWORD_BLOCKLIST_FILE names the file; a missing or non-UTF-8 one is refused
    with one line naming the variable."""
    good = tmp_path / "ours.txt"
    good.write_text("acme\n", encoding="utf-8")
    env = {"AUTHSVC_PASSWORD_BLOCKLIST_FILE": str(good)}
    assert load_settings(env).password_blocklist_file == good
    with pytest.raises(ConfigError, match=r"^AUTHSVC_PASSWORD_BLOCKLIST_FILE: cannot read"):
        load_settings({"AUTHSVC_PASSWORD_BLOCKLIST_FILE": str(tmp_path / "missing.txt")})
    binary = tmp_path / "latin1.txt"
    binary.write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match=r"^AUTHSVC_PASSWORD_BLOCKLIST_FILE: .* is not UTF-8"):
        load_settings({"AUTHSVC_PASSWORD_BLOCKLIST_FILE": str(binary)})


def test_settings_defaults_are_safe() -> None:
    """With no variables set: loopback addresses, embedded database, ES256, RFC 9106 argon2."""
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.grpc_addr == "127.0.0.1:50051" and settings.http_addr == "127.0.0.1:8080"
    assert settings.jwt_algorithm == "ES256"
    assert (settings.argon2.time_cost, settings.argon2.memory_kib, settings.argon2.parallelism) == (
        3,
        65536,
        4,
    )


def test_trusted_proxies_are_networks_and_none_by_default() -> None:
    """AUTHSVC_TRUSTED_PROXIES takes addresses and CIDRs, comma-separated; unset trusts nobody."""
    assert load_settings({}).trusted_proxies == ()
    proxies = load_settings({"AUTHSVC_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,::1"})
    assert [str(n) for n in proxies.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]


def test_an_ipv4_mapped_trusted_proxy_is_its_ipv4_network() -> None:
    """A proxy written IPv4-mapped (::ffff:10.0.0.0/104) is trusted when it calls, as a mapped
    peer is read as its IPv4 address."""
    proxies = load_settings({"AUTHSVC_TRUSTED_PROXIES": "::ffff:10.0.0.0/104, ::ffff:192.0.2.7"})
    assert [str(n) for n in proxies.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTHSVC_GRPC_ADDR", "no-port"),
        ("AUTHSVC_API_TOKEN_TTL", "0"),
        ("AUTHSVC_JWT_ALGORITHM", "HS256"),
        ("AUTHSVC_ARGON2_MEMORY_KIB", "abc"),
        ("AUTHSVC_DB_TIMEOUT", "-1"),
        ("AUTHSVC_TRUSTED_PROXIES", "10.0.0.0/8,proxy.example"),
        ("AUTHSVC_AUDIT_LOGINS", "sometimes"),
        ("AUTHSVC_AUDIT_RETENTION_DAYS", "0"),
        ("AUTHSVC_AUDIT_RETENTION_DAYS", "a year"),
    ],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    """A bad value raises ConfigError whose one-line message starts with the variable's name."""
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert str(caught.value).startswith(f"{name}:") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://admin:hunter2@[::1:5432/x",
        "postgresql://admin:hunter2@127.0.0.1:99999/authsvc",
        "mysql://admin:hunter2@127.0.0.1/authsvc",
        "not a url hunter2",
    ],
    ids=["bracket", "port", "scheme", "words"],
)
def test_a_database_url_that_cannot_be_read_is_a_configuration_error(url: str) -> None:
    """An unreadable AUTHSVC_DATABASE_URL stops start-up as a bad setting (one line naming the
    variable, exit 2), and the line never repeats the URL or its password."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHSVC_DATABASE_URL": url})
    message = str(caught.value)
    assert message.startswith("AUTHSVC_DATABASE_URL: must be postgresql://")
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgres://u@[::1]:5432/db",
        "postgresql:///db?host=/var/run/postgresql",
    ],
)
def test_database_urls_asyncpg_takes_are_taken(url: str) -> None:
    """A host list, an IPv6 host and a Unix socket folder are all valid database URLs."""
    assert load_settings({"AUTHSVC_DATABASE_URL": url}).database_url == url


def test_brute_force_defaults() -> None:
    """Defaults: 3 failures per name and source free, 10 per source across names, then 1 s
    doubling to 60 s, lockout off (30 min when on), complexity off, no max age, no history,
    up to 32 passwords."""
    settings = load_settings({})
    assert (settings.failed_login_allowance, settings.source_failure_allowance) == (3, 10)
    assert (settings.password_history, settings.max_passwords) == (0, 32)
    assert (settings.failed_login_delay_base, settings.failed_login_delay_max) == (1.0, 60.0)
    assert (settings.lockout_threshold, settings.lockout_duration) == (0, 1800.0)
    assert (settings.password_complexity, settings.password_min_length) == (False, 8)
    assert settings.password_max_age == 0


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("1", True), ("on", True), ("off", False)]
)
def test_complexity_switch_spellings(raw: str, value: bool) -> None:
    """AUTHSVC_PASSWORD_COMPLEXITY accepts true/false, 1/0, on/off."""
    assert load_settings({"AUTHSVC_PASSWORD_COMPLEXITY": raw}).password_complexity is value


def test_new_variables_are_read() -> None:
    """Each brute-force and password variable reaches the settings."""
    settings = load_settings(
        {
            "AUTHSVC_FAILED_LOGIN_DELAY_BASE": "0.5",
            "AUTHSVC_FAILED_LOGIN_DELAY_MAX": "30",
            "AUTHSVC_LOCKOUT_THRESHOLD": "10",
            "AUTHSVC_LOCKOUT_DURATION": "900",
            "AUTHSVC_PASSWORD_MIN_LENGTH": "12",
            "AUTHSVC_PASSWORD_MAX_AGE": "7776000",
            "AUTHSVC_FAILED_LOGIN_ALLOWANCE": "5",
            "AUTHSVC_SOURCE_FAILURE_ALLOWANCE": "20",
            "AUTHSVC_PASSWORD_HISTORY": "4",
        }
    )
    assert (settings.failed_login_allowance, settings.source_failure_allowance) == (5, 20)
    assert settings.password_history == 4
    assert (settings.failed_login_delay_base, settings.failed_login_delay_max) == (0.5, 30.0)
    assert (settings.lockout_threshold, settings.lockout_duration) == (10, 900.0)
    assert (settings.password_min_length, settings.password_max_age) == (12, 7776000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTHSVC_FAILED_LOGIN_DELAY_BASE", "-1"),
        ("AUTHSVC_FAILED_LOGIN_DELAY_MAX", "soon"),
        ("AUTHSVC_LOCKOUT_THRESHOLD", "1.5"),
        ("AUTHSVC_LOCKOUT_DURATION", "0"),
        ("AUTHSVC_PASSWORD_COMPLEXITY", "maybe"),
        ("AUTHSVC_PASSWORD_MIN_LENGTH", "4"),
        ("AUTHSVC_PASSWORD_MAX_AGE", "-5"),
        ("AUTHSVC_FAILED_LOGIN_ALLOWANCE", "-1"),
        ("AUTHSVC_PASSWORD_HISTORY", "many"),
    ],
)
def test_bad_brute_force_values_name_their_variable(name: str, value: str) -> None:
    """A bad value raises ConfigError whose one-line message starts with the variable's name."""
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert str(caught.value).startswith(f"{name}:") and "\n" not in str(caught.value)


def test_delay_max_below_base_is_refused() -> None:
    """A maximum delay below the base one is a configuration error naming the maximum."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {"AUTHSVC_FAILED_LOGIN_DELAY_BASE": "10", "AUTHSVC_FAILED_LOGIN_DELAY_MAX": "5"}
        )
    assert str(caught.value).startswith("AUTHSVC_FAILED_LOGIN_DELAY_MAX:")


def test_settings_defaults_are_the_domains() -> None:
    """Every rule's default in Settings is the domain's own, so the two cannot drift apart."""
    settings = Settings()
    throttle, keys, passwords = ThrottlePolicy(), KeyPolicy(), PasswordPolicy()
    assert (
        ThrottlePolicy(
            allowance=settings.failed_login_allowance,
            source_allowance=settings.source_failure_allowance,
            delay_base=settings.failed_login_delay_base,
            delay_max=settings.failed_login_delay_max,
            lockout_threshold=settings.lockout_threshold,
            lockout_duration=settings.lockout_duration,
        )
        == throttle
    )
    assert (settings.jwt_algorithm, timedelta(days=settings.key_rotation_days)) == (
        keys.algorithm,
        keys.rotation,
    )
    assert timedelta(seconds=settings.jwks_max_age) == keys.publish_ahead
    assert (
        settings.password_complexity,
        settings.password_min_length,
        settings.password_blocklist,
    ) == (passwords.complexity, passwords.min_length, passwords.blocklist)
    assert settings.argon2 == Argon2Parameters()
    assert (settings.max_passwords, settings.password_history) == (
        MAX_PASSWORDS_DEFAULT,
        HISTORY_DEFAULT,
    )
    assert (settings.api_token_ttl, settings.token_leeway) == (TTL_DEFAULT, LEEWAY_DEFAULT)
    manager = inspect.signature(PasswordManager).parameters
    assert manager["max_passwords"].default == settings.max_passwords
    assert manager["history"].default == settings.password_history


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_SERVICE_NAME": "auth"}, False),
    ],
)
def test_tracing_is_on_only_with_an_exporter(env: dict[str, str], on: bool) -> None:
    """Tracing follows the OTEL_* variables: on when an exporter or OTLP endpoint is set, off
    otherwise and whenever OTEL_SDK_DISABLED=true."""
    assert load_settings(env).tracing is on


def test_audit_defaults_leave_logins_out_and_keep_90_days() -> None:
    """By default successful logins are not audited and events are kept 90 days."""
    settings = load_settings({})
    assert (settings.audit_logins, settings.audit_retention_days) == (False, 90)


def test_audit_variables_reach_the_settings() -> None:
    """AUTHSVC_AUDIT_LOGINS and AUTHSVC_AUDIT_RETENTION_DAYS reach the settings."""
    settings = load_settings(
        {"AUTHSVC_AUDIT_LOGINS": "true", "AUTHSVC_AUDIT_RETENTION_DAYS": "365"}
    )
    assert (settings.audit_logins, settings.audit_retention_days) == (True, 365)

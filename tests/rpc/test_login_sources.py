"""Failures are counted per name *and source*, end to end over gRPC: a source that has logged in
to a name keeps its own count, so strangers hammering the name never delay its owner (and the
owner's own failures delay it as usual); the source is the peer's address, and `x-forwarded-for`
only from a trusted proxy.

gRPC Python has no channel argument that binds a client's source address (`grpc.local_address`
and the like are silently ignored: the peer stays 127.0.0.1; only C++ has a socket mutator), so
real distinct peers come from `Relay`, which connects to the server from another loopback
address. The servers of tests/rpc/test_brute_force.py trust 127.0.0.1 as a proxy instead."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from service.config import Settings
from service.domain.usernames import username_key
from service.store.db import Database
from tests.rpc.test_brute_force import (
    ALLOWANCE,
    BASE,
    DEFAULT_POLICY,
    KNOWN_SOURCE,
    NAME_ROWS,
    SOURCE_ROW,
    Server,
    assert_refused,
    fail,
    login,
    name_row,
    new_address,
    reason,
    source_of,
)
from tests.support import new_user, serving, serving_target

_loopback = itertools.count(2)


def new_loopback() -> str:
    """A loopback address (127.0.0.2 and on) no other test of the module connects from."""
    return f"127.0.0.{next(_loopback)}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def relay(upstream: str, source: str) -> AsyncIterator[str]:
    """A TCP relay on 127.0.0.1 that connects to `upstream` from the address `source`; yields
    its own address, for a channel. Written by hand (a few lines of asyncio streams) because
    what it stands in for, binding a gRPC channel's source address, does not exist."""
    host, _, port = upstream.rpartition(":")
    writers: list[asyncio.StreamWriter] = []
    pipes: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection(
            host, int(port), local_addr=(source, 0)
        )
        writers.append(up_writer)
        for task in (
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        ):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
        for writer in writers:
            writer.close()
        await asyncio.gather(*pipes, return_exceptions=True)


@asynccontextmanager
async def channel_from(target: str, source: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to `target` whose calls arrive from the peer address `source`."""
    async with relay(target, source) as via, grpc.aio.insecure_channel(via) as channel:
        yield channel


@pytest.fixture(scope="module")
async def plain(db: Database, settings: Settings) -> AsyncIterator[tuple[str, Server]]:
    """The default policy, trusting no proxy: the peer's address is the source."""
    policy = {**DEFAULT_POLICY, "trusted_proxies": ()}
    async with (
        serving_target(db, settings, **policy) as (target, services),
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield target, Server(channel, services)


@pytest.fixture(scope="module")
async def proxied(db: Database, settings: Settings) -> AsyncIterator[Server]:
    """The default policy, trusting 127.0.0.1 to name clients in `x-forwarded-for`."""
    async with serving(db, settings, **DEFAULT_POLICY) as (channel, services):
        yield Server(channel, services)


async def hammer(channel: grpc.aio.Channel, username: str, address: str | None = None) -> int:
    """Wrong passwords, one after another, until TOO_MANY_ATTEMPTS; returns how many were
    checked (each then INVALID_CREDENTIALS)."""
    for checked in range(ALLOWANCE + 2):
        result = await login(channel, username, f"guess {checked}", address)
        if reason(result) == "TOO_MANY_ATTEMPTS":
            return checked
        assert reason(result) == "INVALID_CREDENTIALS", result
    raise AssertionError(f"still no delay after {ALLOWANCE + 2} failures")


# -- the peer's address -----------------------------------------------------------------------


async def test_a_peer_address_is_the_source(plain: tuple[str, Server], db: Database) -> None:
    """Two peers' failures are counted under their own addresses, and a login makes the peer's
    address a known source of the user."""
    target, server = plain
    user = await new_user(server.services, "right password")
    first, second = new_loopback(), new_loopback()
    async with channel_from(target, first) as channel:
        assert reason(await login(channel, user.username, "right password")) == "OK"
        await fail(channel, "nobody-at-all", first, 1)
    async with channel_from(target, second) as channel:
        await fail(channel, "nobody-at-all", second, 2)
    assert await db.fetchrow(KNOWN_SOURCE, user.id, source_of(first)) is not None
    assert (await db.fetchrow(SOURCE_ROW, source_of(first)))["failures"] == 1
    assert (await db.fetchrow(SOURCE_ROW, source_of(second)))["failures"] == 2


async def test_owner_is_not_delayed_by_another_peer_hammering_its_name(
    plain: tuple[str, Server], db: Database
) -> None:
    """A peer that hammers a name until TOO_MANY_ATTEMPTS stays refused, even with the right
    password, while the owner's peer (known from an earlier login) gets in at once."""
    target, server = plain
    user = await new_user(server.services, "right password")
    owner, attacker = new_loopback(), new_loopback()
    async with channel_from(target, owner) as owner_channel:
        assert reason(await login(owner_channel, user.username, "right password")) == "OK"
        async with channel_from(target, attacker) as attacker_channel:
            assert await hammer(attacker_channel, user.username) == ALLOWANCE + 1
            refused = await login(attacker_channel, user.username, "right password")
            assert reason(refused) == "TOO_MANY_ATTEMPTS"
            assert reason(await login(owner_channel, user.username, "right password")) == "OK"
    assert await name_row(db, user.username, owner) is None


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    plain: tuple[str, Server], db: Database
) -> None:
    """A peer that is no trusted proxy cannot pass for the owner's address with
    `x-forwarded-for`: its failures are a stranger's, and the owner still gets in."""
    target, server = plain
    user = await new_user(server.services, "right password")
    owner, attacker = new_loopback(), new_loopback()
    async with channel_from(target, owner) as owner_channel:
        assert reason(await login(owner_channel, user.username, "right password")) == "OK"
        async with channel_from(target, attacker) as attacker_channel:
            assert await hammer(attacker_channel, user.username, owner) == ALLOWANCE + 1
        assert reason(await login(owner_channel, user.username, "right password")) == "OK"
    rows = await db.fetch(NAME_ROWS, username_key(user.username))
    assert [(r["source"], r["failures"]) for r in rows] == [("", ALLOWANCE + 1)]
    assert (await db.fetchrow(SOURCE_ROW, source_of(attacker)))["failures"] == ALLOWANCE + 1
    assert await db.fetchrow(SOURCE_ROW, source_of(owner)) is None


async def test_a_trusted_proxy_names_the_client(proxied: Server, db: Database) -> None:
    """From a trusted proxy, the `x-forwarded-for` address is the source, not the proxy's."""
    client = new_address()
    await fail(proxied.channel, "nobody-at-all", client, 1)
    assert (await db.fetchrow(SOURCE_ROW, source_of(client)))["failures"] == 1
    assert await db.fetchrow(SOURCE_ROW, "ip:127.0.0.1") is None


# -- known sources and strangers --------------------------------------------------------------


async def test_strangers_hammering_delay_strangers_not_the_owner(
    proxied: Server, db: Database
) -> None:
    """After one stranger hammers a name, every stranger (another address too) is refused, the
    owner's known source gets in at once, and its login leaves the strangers' count alone."""
    user = await new_user(proxied.services, "right password")
    owner, attacker, other = new_address(), new_address(), new_address()
    assert reason(await login(proxied.channel, user.username, "right password", owner)) == "OK"
    started = time.monotonic()
    assert await hammer(proxied.channel, user.username, attacker) == ALLOWANCE + 1
    for stranger in (attacker, other):
        refused = await login(proxied.channel, user.username, "right password", stranger)
        assert_refused(refused, BASE, time.monotonic() - started)
    assert reason(await login(proxied.channel, user.username, "right password", owner)) == "OK"
    assert (await name_row(db, user.username))["failures"] == ALLOWANCE + 1
    refused = await login(proxied.channel, user.username, "right password", attacker)
    assert reason(refused) == "TOO_MANY_ATTEMPTS"


async def test_owner_is_delayed_by_its_own_failures(proxied: Server, db: Database) -> None:
    """A known source's own failures delay it as anyone's (the right password is then refused),
    and are counted apart from the strangers', who are not delayed by them."""
    user = await new_user(proxied.services, "right password")
    owner, stranger = new_address(), new_address()
    assert reason(await login(proxied.channel, user.username, "right password", owner)) == "OK"
    started = time.monotonic()
    await fail(proxied.channel, user.username, owner, ALLOWANCE + 1)
    refused = await login(proxied.channel, user.username, "right password", owner)
    assert_refused(refused, BASE, time.monotonic() - started)
    assert (await name_row(db, user.username, owner))["failures"] == ALLOWANCE + 1
    assert await name_row(db, user.username) is None
    assert reason(await login(proxied.channel, user.username, "right password", stranger)) == "OK"

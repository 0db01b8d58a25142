"""Token edges: only the canonical encoding of a token verifies, and a well-signed token with a
malformed claim is simply inactive (never an error)."""

from __future__ import annotations

import time

import grpc
import pytest

from service import app
from tests.rpc.test_tokens import good_claims, signed, verify

# The base64url alphabet; a segment's last character carries bits that decoding may drop.
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def same_bytes_other_text(segment: str) -> str:
    """`segment` with its last character changed in the bits that decoding ignores."""
    unused_bits = {2: 4, 3: 2}[len(segment) % 4]
    last = ALPHABET.index(segment[-1])
    return segment[:-1] + ALPHABET[last ^ ((1 << unused_bits) - 1)]


async def test_canonical_token_is_active(channel: grpc.aio.Channel, services: app.Services) -> None:
    """The token exactly as signed verifies active (the rule below refuses only re-encodings)."""
    assert (await verify(channel, await signed(services, await good_claims(services)))).active


@pytest.mark.parametrize(
    "reencode",
    [
        lambda t: t + "==",
        lambda t: t + "=",
        lambda t: t.replace(".", "=.", 1),
        lambda t: t + ".",
        lambda t: t + ".e30",
        lambda t: t.replace(".", "..", 1),
        lambda t: " " + t,
        lambda t: t + "\n",
        lambda t: t.replace("-", "+").replace("_", "/"),
        lambda t: ".".join([*t.split(".")[:2], same_bytes_other_text(t.split(".")[2])]),
    ],
    ids=[
        "padding",
        "one-pad",
        "padded-header",
        "fourth-empty-segment",
        "fourth-segment",
        "empty-segment",
        "leading-space",
        "trailing-newline",
        "standard-alphabet",
        "non-zero-unused-bits",
    ],
)
async def test_non_canonical_encoding_is_inactive(
    channel: grpc.aio.Channel, services: app.Services, reencode
) -> None:
    """A signed token re-encoded in any other way (padding, segments, alphabet, stray bits) is
    inactive, though its bytes still decode to the signed ones."""
    # A token with no '-' or '_' reads the same in both alphabets: sign until one differs.
    for _ in range(50):
        token = await signed(services, await good_claims(services))
        other = reencode(token)
        if other != token:
            break
    assert other != token
    assert not (await verify(channel, other)).active


@pytest.mark.parametrize(
    "change",
    [
        {"iat": "1700000000"},
        {"iat": True},
        {"iat": 1.5},
        {"iat": None},
        {"exp": 1e20},
        {"exp": 10**20},
        {"exp": str(10**10)},
        {"exp": [1]},
        {"nbf": "0"},
        {"nbf": 10**20},
        {"cv": "1"},
        {"sub": 42},
        {"username": ["a"]},
        {"jti": {"a": 1}},
    ],
    ids=repr,
)
async def test_malformed_claim_signed_by_the_real_key_is_inactive(
    channel: grpc.aio.Channel, services: app.Services, change
) -> None:
    """A token signed by our key with a claim of the wrong type or out of range is active:
    false, not INTERNAL."""
    token = await signed(services, {**await good_claims(services), **change})
    try:
        reply = await verify(channel, token)
    except grpc.aio.AioRpcError as error:
        pytest.fail(f"{change}: {error.code().name} {error.details()}")
    assert not reply.active


async def test_whole_number_claims_in_range_are_active(
    channel: grpc.aio.Channel, services: app.Services
) -> None:
    """Integer iat/exp/nbf/cv within range stay valid (the type rules refuse only the wrong)."""
    claims = await good_claims(services)
    now = int(time.time())
    reply = await verify(channel, await signed(services, {**claims, "nbf": now - 5}))
    assert reply.active and reply.exp == claims["exp"]

"""Domain rules called directly: usernames, ttl, password length, key ids, configuration."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest

from service.domain.passwords import check_password
from service.domain.signing_keys import (
    ActiveKey,
    generate_signing_key,
    load_private_key,
    thumbprint,
)
from service.domain.token_lifetime import check_ttl
from service.domain.tokens import TOKEN_TYPE, compact_jws
from service.domain.usernames import check_new_username, check_username, username_key
from service.errors import AuthError, Reason


def test_username_key_folds_case_and_width() -> None:
    """Case and Unicode compatibility forms map to one key."""
    assert username_key("Alice") == username_key("ALICE") == username_key("\uff21lice")


@pytest.mark.parametrize("bad", ["", "a" * 257, "a:b", "tab\there"])
def test_bad_usernames_are_invalid_argument(bad: str) -> None:
    """Empty, overlong, ':' and control characters are refused."""
    with pytest.raises(AuthError) as caught:
        check_username(bad)
    assert caught.value.reason is Reason.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "spoof",
    [" bob", "bob ", "bo\u200bb", "\u202eevil", "a\u2028b", "bob\u3164", "b\u2800ob"],
    ids=[
        "leading-space",
        "trailing-space",
        "zero-width",
        "rtl-override",
        "line-separator",
        "hangul-filler",
        "braille-blank",
    ],
)
def test_a_new_name_cannot_look_like_another(spoof: str) -> None:
    """A new account's name may not start or end with a space, nor hold an invisible or
    direction-changing character; login still takes such a name (an older account's)."""
    with pytest.raises(AuthError) as caught:
        check_new_username(spoof)
    assert caught.value.reason is Reason.INVALID_ARGUMENT
    check_username(spoof)


@pytest.mark.parametrize(
    "name", ["bob", "Jos\u00e9 Garc\u00eda", "svc-payments.eu", "\u5c71\u7530"]
)
def test_ordinary_names_are_new_names(name: str) -> None:
    """Inner spaces, accents, punctuation and other scripts are fine in a new name."""
    check_new_username(name)


def test_ttl_default_and_bounds() -> None:
    """No ttl means 300; 1 and 86400 pass; 0 and 86401 do not."""
    assert check_ttl(None) == 300
    assert check_ttl(1) == 1 and check_ttl(86400) == 86400
    for bad in (0, 86401, -5):
        with pytest.raises(AuthError):
            check_ttl(bad)


def test_password_limit_counts_utf8_bytes() -> None:
    """4096 bytes pass, 4097 do not, and multi-byte characters count by their bytes."""
    check_password("a" * 4096)
    with pytest.raises(AuthError):
        check_password("a" * 4097)
    with pytest.raises(AuthError):
        check_password("\u00e9" * 2049)


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "Ed25519", "EdDSA"])
def test_kid_is_the_rfc7638_thumbprint(algorithm: str) -> None:
    """A key's kid is the thumbprint of its public JWK, which carries alg and use."""
    key = generate_signing_key(algorithm, datetime.now(UTC))
    assert key.kid == thumbprint(key.public_jwk)
    assert key.public_jwk["alg"] == algorithm and key.public_jwk["use"] == "sig"
    assert "d" not in key.public_jwk


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "Ed25519", "EdDSA"])
def test_tokens_are_what_pyjwt_encodes(algorithm: str) -> None:
    """compact_jws gives PyJWT's header and payload segments, and a signature PyJWT verifies."""
    key = generate_signing_key(algorithm, datetime.now(UTC))
    active = ActiveKey(key, load_private_key(key, None))
    claims = {"iss": "i", "aud": "a", "sub": "1", "username": "n\u00e9", "iat": 1, "exp": 2}
    ours = compact_jws(claims, active)
    pyjwt = jwt.encode(
        claims, active.private, algorithm=algorithm, headers={"kid": key.kid, "typ": TOKEN_TYPE}
    )
    assert ours.split(".")[:2] == pyjwt.split(".")[:2]
    public = active.private.public_key()
    options = {"verify_exp": False, "verify_iat": False}
    decoded = jwt.decode(ours, public, [algorithm], audience="a", options=options)
    assert decoded == claims


def test_rfc7638_example_thumbprint() -> None:
    """The RFC 7638 section 3.1 example key gives the published thumbprint."""
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
            "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
            "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
            "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
            "Cur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

"""The benchmark's peer: a FastAPI + fastapi-users service, as its documentation sets one up.

fastapi-users' own pieces throughout: `SQLAlchemyUserDatabase` on asyncpg, a `BaseUserManager`,
the JWT authentication backend with a Bearer transport, and its login route
(`POST /auth/jwt/login`, form `username` = e-mail, `password`), whose `authenticate` checks the
password with fastapi-users' `PasswordHelper` (pwdlib's argon2id). Only the parameters differ
from the defaults: argon2id at the cost the bench gives (`PEER_ARGON2=t,m_kib,p`, the same as
the authsvc server it is compared with) and ES256 tokens, as authsvc signs by default.

Runs in its own environment (bench/peer/requirements.txt, `make bench` makes `.venv-peer`), never
in the service's. `python app.py setup EMAIL PASSWORD ...` creates the table and the users;
`uvicorn app:app --workers 2` serves (environment: PEER_DATABASE_URL, PEER_ARGON2).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users.password import PasswordHelper
from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

DATABASE_URL = os.environ.get("PEER_DATABASE_URL", "postgresql+asyncpg://localhost/peer")
TIME_COST, MEMORY_KIB, PARALLELISM = map(int, os.environ.get("PEER_ARGON2", "5,7168,1").split(","))
LIFETIME = 300  # seconds, authsvc's default token lifetime

# An ES256 key per worker is enough here: nothing verifies the tokens.
_KEY = ec.generate_private_key(ec.SECP256R1())
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PUBLIC_PEM = _KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


engine = create_async_engine(DATABASE_URL, pool_size=10)
session_maker = async_sessionmaker(engine, expire_on_commit=False)
argon2id = Argon2Hasher(time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=PARALLELISM)
password_helper = PasswordHelper(PasswordHash((argon2id,)))


async def get_async_session() -> AsyncGenerator[AsyncSession, None]:
    async with session_maker() as session:
        yield session


async def get_user_db(
    session: Annotated[AsyncSession, Depends(get_async_session)],
) -> AsyncGenerator[SQLAlchemyUserDatabase[User, uuid.UUID], None]:
    yield SQLAlchemyUserDatabase(session, User)


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = "bench"
    verification_token_secret = "bench"


async def get_user_manager(
    user_db: Annotated[SQLAlchemyUserDatabase[User, uuid.UUID], Depends(get_user_db)],
) -> AsyncGenerator[UserManager, None]:
    yield UserManager(user_db, password_helper)


def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
    return JWTStrategy(
        secret=PRIVATE_PEM.decode(),
        public_key=PUBLIC_PEM.decode(),
        algorithm="ES256",
        lifetime_seconds=LIFETIME,
    )


auth_backend = AuthenticationBackend(
    name="jwt",
    transport=BearerTransport(tokenUrl="auth/jwt/login"),
    get_strategy=get_jwt_strategy,
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])

app = FastAPI()
app.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def setup(credentials: list[tuple[str, str]]) -> None:
    """Create the users table and the users (e-mail, password), with fastapi-users' manager."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with session_maker() as session:
        manager = UserManager(SQLAlchemyUserDatabase(session, User), password_helper)
        for email, password in credentials:
            await manager.create(UserCreate(email=email, password=password))
    await engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "setup" or len(sys.argv) % 2:
        sys.exit("usage: app.py setup EMAIL PASSWORD [EMAIL PASSWORD ...]")
    pairs = sys.argv[2:]
    asyncio.run(setup(list(zip(pairs[::2], pairs[1::2], strict=True))))

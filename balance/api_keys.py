"""Management API keys: create (the key is shown once), verify, list, revoke.

A key is ``rk_`` followed by 43 URL-safe characters from 32 random bytes
(``secrets.token_urlsafe``). Only its SHA-256 (hex) is stored, with its first 8
characters as ``prefix`` to find the row and to name the key in listings and logs.

Why a plain SHA-256 and not bcrypt/argon2: slow, salted hashes exist to make guessing a
low-entropy *password* from its hash expensive. A key here carries 256 bits from the
operating system's CSPRNG; nobody can enumerate 2^256 candidates whatever the speed of
the hash, and SHA-256's preimage resistance is all that is needed (a leaked table gives
no usable key). A fast hash also keeps verification cheap on every request. The
comparison with the stored hash is constant-time (``hmac.compare_digest``).

Errors (stable codes)::

    ApiKeyError            API_KEY_ERROR
    ├── InvalidApiKey      INVALID_API_KEY   a bad role / account / name (names the field)
    └── UnknownApiKey      UNKNOWN_API_KEY   no key with this id
    balance.accounts.UnknownAccount  UNKNOWN_ACCOUNT  the key's account does not exist

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import UnknownAccount
from storage.api_key_tables import API_KEY_ROLES, api_keys
from storage.engine import wrap_driver_errors
from storage.tables import accounts, utcnow

log = structlog.get_logger(__name__)

Role = Literal["operator", "reseller", "customer"]
KEY_MARK = "rk_"
PREFIX_LENGTH = 8
_RANDOM_BYTES = 32
KEY_LENGTH = len(KEY_MARK) + 43  # token_urlsafe(32): 43 characters
_MAX_NAME = 200


class ApiKeyError(Exception):
    """Base of API key errors."""

    code = "API_KEY_ERROR"


class InvalidApiKey(ApiKeyError):
    """A field of a new key is invalid (``field`` names it)."""

    code = "INVALID_API_KEY"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownApiKey(ApiKeyError):
    """No API key has this id."""

    code = "UNKNOWN_API_KEY"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified key acts for: its role and account (None for an operator)."""

    role: Role
    account_id: str | None
    key_prefix: str = ""  # the key's first characters, for logs; never the key

    @property
    def read_only(self) -> bool:
        """A customer key only reads."""
        return self.role == "customer"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One stored key, without its secret."""

    id: int
    prefix: str
    role: Role
    account_id: str | None
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key still authenticates."""
        return self.revoked_at is None


def key_hash(plaintext: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def key_prefix(presented: str) -> str:
    """What may be logged of a presented key: its prefix if it looks like ours."""
    if presented.startswith(KEY_MARK) and len(presented) == KEY_LENGTH:
        return presented[:PREFIX_LENGTH]
    return "(not a ratekeeper key)"


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        prefix=row.prefix,
        role=cast(Role, row.role),
        account_id=row.account_id,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _check_new(role: str, account_id: str | None, name: str) -> None:
    if role not in API_KEY_ROLES:
        raise InvalidApiKey("role", f"one of {', '.join(API_KEY_ROLES)}, got {role!r}")
    if role == "operator" and account_id is not None:
        raise InvalidApiKey("account_id", "an operator key belongs to no account")
    if role != "operator" and not account_id:
        raise InvalidApiKey("account_id", f"a {role} key needs the account it acts for")
    if not isinstance(name, str) or len(name) > _MAX_NAME:
        raise InvalidApiKey("name", f"a string of at most {_MAX_NAME} characters")


class ApiKeyStore:
    """API keys in SQL (each call is its own transaction)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, role: str, account_id: str | None, name: str = ""
    ) -> tuple[KeyInfo, str]:
        """A new key: its info and the plaintext, which is never available again."""
        _check_new(role, account_id, name)
        plaintext = KEY_MARK + secrets.token_urlsafe(_RANDOM_BYTES)
        prefix, created_at = plaintext[:PREFIX_LENGTH], utcnow()
        values = {
            "prefix": prefix,
            "hash": key_hash(plaintext),
            "role": role,
            "account_id": account_id,
            "name": name,
            "created_at": created_at,
        }
        with wrap_driver_errors("creating an API key"):
            async with self._engine.begin() as conn:
                if account_id is not None:
                    found = await conn.execute(
                        select(accounts.c.id).where(accounts.c.id == account_id)
                    )
                    if found.first() is None:
                        raise UnknownAccount(account_id)
                result = await conn.execute(
                    insert(api_keys).values(**values).returning(api_keys.c.id)
                )
                key_id = int(result.scalar_one())
        info = KeyInfo(key_id, prefix, cast(Role, role), account_id, name, created_at, None)
        log.info("api key created", key_id=key_id, key_prefix=info.prefix, role=role,
                 account_id=account_id)  # fmt: skip
        return info, plaintext

    async def verify(self, plaintext: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        if not isinstance(plaintext, str) or len(plaintext) != KEY_LENGTH:
            return None
        digest = key_hash(plaintext)
        query = select(api_keys).where(
            api_keys.c.prefix == plaintext[:PREFIX_LENGTH], api_keys.c.revoked_at.is_(None)
        )
        with wrap_driver_errors("verifying an API key"):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        match = None
        for row in rows:  # every candidate is compared: no early exit on a match
            if hmac.compare_digest(row.hash, digest):
                match = row
        if match is None:
            return None
        return Principal(cast(Role, match.role), match.account_id, match.prefix)

    async def list(self, account_id: str | None = None) -> builtins.list[KeyInfo]:
        """Every key ordered by id (revoked ones included), or only one account's."""
        query = select(api_keys).order_by(api_keys.c.id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        with wrap_driver_errors("listing API keys"):
            async with self._engine.connect() as conn:
                return [_info(row) for row in await conn.execute(query)]

    async def revoke(self, key_id: int) -> KeyInfo:
        """Revoke a key (kept for the record); revoking a revoked key changes nothing."""
        with wrap_driver_errors("revoking an API key"):
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
                row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise UnknownApiKey(f"unknown API key id: {key_id!r}")
        info = _info(row)
        log.info("api key revoked", key_id=key_id, key_prefix=info.prefix)
        return info

"""The UI's people and sessions: local accounts (argon2 password hashes) and server-side sessions.

Two tables beside the store's own, on the same database (``ui_accounts``, ``ui_sessions``;
created by the store's migration 0003). A session is a random
token: the browser holds it in a signed cookie, the database only its SHA-256, so a copy of the
database cannot be replayed as a sign-in. Every request re-reads the session and, for local
accounts, the account: disabling an account or changing its role takes effect at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    inspect,
    select,
    update,
)

from seawall.clock import Clock, utc_now
from seawall.errors import InvalidRequestError, NotFoundError, StoreError
from seawall.store.schema import NAMING_CONVENTION, UTCDateTime
from seawall.store.sql import store_errors
from seawall.ui.settings import ROLES, Role

#: The UI's own tables (same naming convention as the store's, so the migration can name them).
metadata = MetaData(naming_convention=NAMING_CONVENTION)

ui_accounts = Table(
    "ui_accounts",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("disabled_at", UTCDateTime(), nullable=True),
    Column("last_login_at", UTCDateTime(), nullable=True),
)

ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 hex of the cookie's token
    Column("subject", String(320), nullable=False),  # the account name, or the OIDC e-mail
    Column("source", String(16), nullable=False),  # "local" or "oidc"
    Column("role", String(16), nullable=False),  # the role at sign-in (OIDC); local re-reads it
    Column("display_name", String(200), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    UniqueConstraint("csrf_token"),
    Index(None, "subject"),
    Index(None, "expires_at"),
)

Source = Literal["local", "oidc"]
#: Account names: what people type at the sign-in form and the CLI.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
#: ``last_seen_at`` is written at most this often per session.
TOUCH_EVERY = timedelta(minutes=1)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Account:
    """A local account as stored (the password hash stays inside this module)."""

    name: str
    role: Role
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None = None
    last_login_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class Session:
    """A signed-in person, as every UI request sees them."""

    subject: str
    source: Source
    role: Role
    display_name: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _account(row: Any) -> Account:
    return Account(
        name=row.name,
        role=cast(Role, row.role),
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled_at=row.disabled_at,
        last_login_at=row.last_login_at,
    )


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidRequestError(f"unknown role {role!r}; one of: {', '.join(ROLES)}", param="role")
    return role


class AccountStore:
    """Local accounts and UI sessions on the store's database; synchronous and thread-safe."""

    def __init__(
        self, engine: Engine, *, clock: Clock = utc_now, hasher: PasswordHasher | None = None
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        # Verified when nobody has the name, so that a wrong name costs as long as a wrong password.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self._checked = False
        self._check_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def check_tables(self) -> None:
        """Raise :class:`StoreError` with the fix when the UI's tables are missing."""
        if self._checked:
            return
        with self._check_lock, store_errors(self.engine, "looking for the UI's tables"):
            present = set(inspect(self.engine).get_table_names())
            missing = sorted({ui_accounts.name, ui_sessions.name} - present)
            if missing:
                raise StoreError(
                    f"the store has no {' or '.join(missing)} table: run `seawall db upgrade` "
                    "(the web UI's accounts and sessions live in the store)"
                )
            self._checked = True

    @contextmanager
    def _connect(self, doing: str, *, write: bool = False) -> Iterator[Connection]:
        self.check_tables()
        with store_errors(self.engine, doing), self.engine.connect() as connection:
            if write:
                connection.execution_options(seawall_write=True)  # BEGIN IMMEDIATE on SQLite
            with connection.begin():
                yield connection

    # ------------------------------------------------------------------ accounts

    def create(self, name: str, role: str, password: str) -> Account:
        """A new enabled account; raises InvalidRequestError for a bad name/role or a taken name."""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidRequestError(
                "an account name is 1-100 letters, digits, '.', '_', '@' or '-', starting with a letter "
                "or digit",
                param="name",
            )
        role = check_role(role)
        now = self.clock()
        password_hash = self.hasher.hash(password)
        taken = InvalidRequestError(f"an account named {name!r} exists already", param="name")
        try:
            with self._connect("creating an account", write=True) as connection:
                if connection.execute(select(ui_accounts.c.name).where(ui_accounts.c.name == name)).first():
                    raise taken
                connection.execute(
                    insert(ui_accounts).values(
                        name=name, role=role, password_hash=password_hash, created_at=now, updated_at=now
                    )
                )
        except StoreError:
            if self.get(name) is not None:  # another process created it between the check and the insert
                raise taken from None
            raise
        return Account(name, role, now, now)

    def get(self, name: str) -> Account | None:
        with self._connect("reading an account") as connection:
            row = connection.execute(select(ui_accounts).where(ui_accounts.c.name == name)).first()
        return _account(row) if row is not None else None

    def list_accounts(self) -> list[Account]:
        with self._connect("listing accounts") as connection:
            rows = connection.execute(select(ui_accounts).order_by(ui_accounts.c.name)).all()
        return [_account(row) for row in rows]

    def _update(self, name: str, doing: str, **values: Any) -> Account:
        with self._connect(doing, write=True) as connection:
            done = connection.execute(
                update(ui_accounts)
                .where(ui_accounts.c.name == name)
                .values(updated_at=self.clock(), **values)
            )
            if done.rowcount == 0:
                raise NotFoundError(f"no account named {name!r}")
            row = connection.execute(select(ui_accounts).where(ui_accounts.c.name == name)).one()
        return _account(row)

    def set_role(self, name: str, role: str) -> Account:
        return self._update(name, "changing an account's role", role=check_role(role))

    def set_password(self, name: str, password: str) -> Account:
        account = self._update(name, "changing a password", password_hash=self.hasher.hash(password))
        self.end_sessions(name, "local")
        return account

    def disable(self, name: str) -> Account:
        """Disable the account and end its sessions (idempotent)."""
        account = self.get(name)
        if account is None:
            raise NotFoundError(f"no account named {name!r}")
        if account.active:
            account = self._update(name, "disabling an account", disabled_at=self.clock())
        self.end_sessions(name, "local")
        return account

    def enable(self, name: str) -> Account:
        return self._update(name, "enabling an account", disabled_at=None)

    def verify(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is its password and it is enabled, else None.

        Takes as long for an unknown name as for a wrong password (one argon2 verification),
        and re-hashes a password whose hash uses weaker parameters than the current ones."""
        with self._connect("checking a password") as connection:
            row = connection.execute(select(ui_accounts).where(ui_accounts.c.name == name)).first()
        stored = row.password_hash if row is not None else self._dummy_hash
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled_at is not None:
            return None
        values: dict[str, Any] = {"last_login_at": self.clock()}
        if self.hasher.check_needs_rehash(stored):
            values["password_hash"] = self.hasher.hash(password)
        with self._connect("recording a sign-in", write=True) as connection:
            connection.execute(update(ui_accounts).where(ui_accounts.c.name == name).values(**values))
        return _account(row)

    # ------------------------------------------------------------------ sessions

    def start_session(
        self, subject: str, source: Source, role: Role, display_name: str, *, max_age_s: int
    ) -> tuple[str, Session]:
        """A new session; returns the token (for the cookie, never stored) and the session."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(
            subject=subject,
            source=source,
            role=role,
            display_name=display_name[:200],
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + timedelta(seconds=max_age_s),
            last_seen_at=now,
        )
        with self._connect("starting a session", write=True) as connection:
            connection.execute(delete(ui_sessions).where(ui_sessions.c.expires_at <= now))
            connection.execute(
                insert(ui_sessions).values(
                    token_hash=_hash_token(token),
                    subject=session.subject,
                    source=session.source,
                    role=session.role,
                    display_name=session.display_name,
                    csrf_token=session.csrf_token,
                    created_at=now,
                    expires_at=session.expires_at,
                    last_seen_at=now,
                )
            )
        return token, session

    def session(self, token: str, *, idle_s: int) -> Session | None:
        """The live session of ``token``: None when unknown, expired, idle too long, or (local)
        its account is gone or disabled. A local session carries the account's current role."""
        if not token:
            return None
        now = self.clock()
        key = _hash_token(token)
        query = (
            select(ui_sessions, ui_accounts.c.role.label("account_role"), ui_accounts.c.disabled_at)
            .select_from(
                ui_sessions.outerjoin(
                    ui_accounts,
                    (ui_sessions.c.source == "local") & (ui_accounts.c.name == ui_sessions.c.subject),
                )
            )
            .where(ui_sessions.c.token_hash == key)
        )
        with self._connect("reading a session") as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        idle_since = now - timedelta(seconds=idle_s)
        dead = row.expires_at <= now or row.last_seen_at <= idle_since
        if row.source == "local" and (row.account_role is None or row.disabled_at is not None):
            dead = True
        if dead:
            self._delete_session(key)
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            with self._connect("touching a session", write=True) as connection:
                connection.execute(
                    update(ui_sessions).where(ui_sessions.c.token_hash == key).values(last_seen_at=now)
                )
        role = row.account_role if row.source == "local" else row.role
        return Session(
            subject=row.subject,
            source=cast(Source, row.source),
            role=cast(Role, role),
            display_name=row.display_name,
            csrf_token=row.csrf_token,
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_seen_at=now,
        )

    def _delete_session(self, key: str) -> None:
        with self._connect("ending a session", write=True) as connection:
            connection.execute(delete(ui_sessions).where(ui_sessions.c.token_hash == key))

    def end_session(self, token: str) -> None:
        self._delete_session(_hash_token(token))

    def end_sessions(self, subject: str, source: Source) -> int:
        """End every session of one person (a disabled account, a new password); how many."""
        with self._connect("ending sessions", write=True) as connection:
            done = connection.execute(
                delete(ui_sessions).where(ui_sessions.c.subject == subject, ui_sessions.c.source == source)
            )
        return int(done.rowcount)


__all__ = [
    "NAME_PATTERN",
    "Account",
    "AccountStore",
    "Session",
    "Source",
    "check_role",
    "metadata",
    "ui_accounts",
    "ui_sessions",
]

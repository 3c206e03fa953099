"""Local accounts of the web UI (argon2id password hashes) and server-side sessions.

The rules live here; the rows live in the store (its :class:`~seawall.store.base.UIAccountStore`
role: the ``ui_accounts`` and ``ui_sessions`` tables, created by the store's migration 0003, or
the in-memory store's dicts). A session is a random token: the browser holds it in a signed
cookie, the store only its SHA-256, so a copy of the database cannot be replayed as a sign-in.
Every request re-reads the session and, for local accounts, the account: disabling an account or
changing its role takes effect at once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from seawall.clock import Clock, utc_now
from seawall.errors import InvalidRequestError, NotFoundError
from seawall.store.base import AccountRow, OperatorToken, SessionRow, UIAccountStore, operator_token_hash
from seawall.store.schema import ui_accounts, ui_sessions
from seawall.store.schema import ui_metadata as metadata
from seawall.ui.settings import ROLES, Role

Source = Literal["local", "oidc"]
#: Account names: what people type at the sign-in form and the CLI.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
#: How every operator token starts (to recognise one in a config file or a leak scanner).
TOKEN_PREFIX = "swop-"
#: ``last_seen_at`` is written at most this often per session.
TOUCH_EVERY = timedelta(minutes=1)


def _hash_token(token: str) -> str:
    return operator_token_hash(token)


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


def _account(row: AccountRow) -> Account:
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
    """Local accounts and UI sessions, kept by the store's UI account role; thread-safe."""

    def __init__(
        self, records: UIAccountStore, *, clock: Clock = utc_now, hasher: PasswordHasher | None = None
    ) -> None:
        self.records = records
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        # Verified when nobody has the name, so that a wrong name costs as long as a wrong password.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

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
        return _account(self.records.create_account(name, role, password_hash, now))

    def get(self, name: str) -> Account | None:
        row = self.records.get_account(name)
        return _account(row) if row is not None else None

    def list_accounts(self) -> list[Account]:
        return [_account(row) for row in self.records.list_accounts()]

    def set_role(self, name: str, role: str) -> Account:
        return _account(self.records.update_account(name, self.clock(), role=check_role(role)))

    def set_password(self, name: str, password: str) -> Account:
        row = self.records.update_account(name, self.clock(), password_hash=self.hasher.hash(password))
        self.end_sessions(name, "local")
        return _account(row)

    def disable(self, name: str) -> Account:
        """Disable the account and end its sessions (idempotent)."""
        account = self.get(name)
        if account is None:
            raise NotFoundError(f"no account named {name!r}")
        if account.active:
            account = _account(self.records.update_account(name, self.clock(), disabled=True))
        self.end_sessions(name, "local")
        return account

    def enable(self, name: str) -> Account:
        return _account(self.records.update_account(name, self.clock(), disabled=False))

    def verify(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is its password and it is enabled, else None.

        Takes as long for an unknown name as for a wrong password (one argon2 verification),
        and re-hashes a password whose hash uses weaker parameters than the current ones."""
        row = self.records.get_account(name)
        stored = row.password_hash if row is not None else self._dummy_hash
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled_at is not None:
            return None
        rehashed = self.hasher.hash(password) if self.hasher.check_needs_rehash(stored) else None
        self.records.record_sign_in(name, self.clock(), rehashed)
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
        self.records.start_session(
            SessionRow(
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
        found = self.records.find_session(key)
        if found is None:
            return None
        row, account = found
        idle_since = now - timedelta(seconds=idle_s)
        dead = row.expires_at <= now or row.last_seen_at <= idle_since
        if row.source == "local" and (account is None or account.disabled_at is not None):
            dead = True
        if dead:
            self.records.end_session(key)
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            self.records.touch_session(key, now)
        role = account.role if row.source == "local" and account is not None else row.role
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

    def end_session(self, token: str) -> None:
        self.records.end_session(_hash_token(token))

    def end_sessions(self, subject: str, source: Source) -> int:
        """End every session of one person (a disabled account, a new password); how many."""
        return self.records.end_sessions(subject, source)

    # ------------------------------------------------------------------ operator tokens

    def create_token(self, name: str, role: str, created_by: str) -> tuple[str, OperatorToken]:
        """A new operator token (a bearer token for the API and /metrics with ``role``'s rights);
        returns the token (shown once, never stored) and what the store keeps."""
        name = name.strip()
        if not 1 <= len(name) <= 200 or not name.isprintable():
            raise InvalidRequestError("a token's name is 1-200 printable characters", param="name")
        role = check_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = OperatorToken(
            id=f"tok_{secrets.token_hex(6)}",
            name=name,
            role=role,
            token_hash=operator_token_hash(token),
            prefix=token[:8],
            created_at=self.clock(),
            created_by=created_by[:320],
        )
        return token, self.records.create_token(row)

    def list_tokens(self, *, include_revoked: bool = False) -> list[OperatorToken]:
        return self.records.list_tokens(include_revoked=include_revoked)

    def revoke_token(self, token_id: str) -> OperatorToken:
        """Revoke a token: every replica refuses it within seconds (NotFoundError when unknown)."""
        return self.records.revoke_token(token_id, self.clock())


__all__ = [
    "NAME_PATTERN",
    "TOKEN_PREFIX",
    "Account",
    "AccountStore",
    "Session",
    "Source",
    "check_role",
    "metadata",
    "ui_accounts",
    "ui_sessions",
]

"""The UI account role (:class:`seawall.store.base.UIAccountStore`) on SQL: ``ui_accounts`` and
``ui_sessions`` (migration 0003). Rows only: passwords arrive hashed, tokens as their SHA-256."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, inspect, select, update

from seawall.errors import InvalidRequestError, NotFoundError, StoreError
from seawall.store.base import AccountRow, OperatorToken, SessionRow
from seawall.store.schema import ui_accounts, ui_sessions, ui_tokens
from seawall.store.sql.database import SqlRole, store_errors


def _account(row: Row[Any]) -> AccountRow:
    return AccountRow(
        name=row.name,
        role=row.role,
        password_hash=row.password_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled_at=row.disabled_at,
        last_login_at=row.last_login_at,
    )


#: ``find_token`` writes last_used_at only when the stored value is older than this.
TOKEN_TOUCH_EVERY = timedelta(minutes=1)


def _token(row: Row[Any]) -> OperatorToken:
    return OperatorToken(**{column.name: row._mapping[column.name] for column in ui_tokens.columns})


def _session_values(session: SessionRow) -> dict[str, Any]:
    return {
        "token_hash": session.token_hash,
        "subject": session.subject,
        "source": session.source,
        "role": session.role,
        "display_name": session.display_name,
        "csrf_token": session.csrf_token,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "last_seen_at": session.last_seen_at,
    }


class SqlUIAccounts(SqlRole):
    """The web UI's local accounts and sessions."""

    def _setup(self) -> None:
        super()._setup()
        self._checked = False
        self._check_lock = threading.Lock()

    def check_ui_tables(self) -> None:
        """Raise :class:`StoreError` with the fix when the UI's tables are missing."""
        if self._checked:
            return
        engine = self.db.engine
        with self._check_lock, store_errors(engine, "looking for the UI's tables"):
            present = set(inspect(engine).get_table_names())
            missing = sorted({ui_accounts.name, ui_sessions.name, ui_tokens.name} - present)
            if missing:
                raise StoreError(
                    f"the store has no {' or '.join(missing)} table: run `seawall db upgrade` "
                    "(the web UI's accounts and sessions live in the store)"
                )
            self._checked = True

    @contextmanager
    def _ui(self, doing: str, *, write: bool = False) -> Iterator[Connection]:
        self.check_ui_tables()
        with self.db.transaction(doing, write=write) as connection:
            yield connection

    # ------------------------------------------------------------------ accounts

    def create_account(self, name: str, role: str, password_hash: str, now: datetime) -> AccountRow:
        """A new enabled account; InvalidRequestError when the name is taken (even by a racing process)."""
        taken = InvalidRequestError(f"an account named {name!r} exists already", param="name")
        try:
            with self._ui("creating an account", write=True) as connection:
                if connection.execute(select(ui_accounts.c.name).where(ui_accounts.c.name == name)).first():
                    raise taken
                connection.execute(
                    insert(ui_accounts).values(
                        name=name, role=role, password_hash=password_hash, created_at=now, updated_at=now
                    )
                )
        except StoreError:
            if self.get_account(name) is not None:  # created by another process since the check
                raise taken from None
            raise
        return AccountRow(name, role, password_hash, now, now)

    def get_account(self, name: str) -> AccountRow | None:
        with self._ui("reading an account") as connection:
            row = connection.execute(select(ui_accounts).where(ui_accounts.c.name == name)).first()
        return _account(row) if row is not None else None

    def list_accounts(self) -> list[AccountRow]:
        with self._ui("listing accounts") as connection:
            rows = connection.execute(select(ui_accounts).order_by(ui_accounts.c.name)).all()
        return [_account(row) for row in rows]

    def update_account(
        self,
        name: str,
        now: datetime,
        *,
        role: str | None = None,
        password_hash: str | None = None,
        disabled: bool | None = None,
    ) -> AccountRow:
        values: dict[str, Any] = {"updated_at": now}
        if role is not None:
            values["role"] = role
        if password_hash is not None:
            values["password_hash"] = password_hash
        if disabled is not None:
            values["disabled_at"] = now if disabled else None
        with self._ui("changing an account", write=True) as connection:
            done = connection.execute(update(ui_accounts).where(ui_accounts.c.name == name).values(**values))
            if done.rowcount == 0:
                raise NotFoundError(f"no account named {name!r}")
            row = connection.execute(select(ui_accounts).where(ui_accounts.c.name == name)).one()
        return _account(row)

    def record_sign_in(self, name: str, now: datetime, password_hash: str | None = None) -> None:
        values: dict[str, Any] = {"last_login_at": now}
        if password_hash is not None:
            values["password_hash"] = password_hash
        with self._ui("recording a sign-in", write=True) as connection:
            connection.execute(update(ui_accounts).where(ui_accounts.c.name == name).values(**values))

    # ------------------------------------------------------------------ sessions

    def start_session(self, session: SessionRow) -> None:
        with self._ui("starting a session", write=True) as connection:
            connection.execute(delete(ui_sessions).where(ui_sessions.c.expires_at <= session.created_at))
            connection.execute(insert(ui_sessions).values(**_session_values(session)))

    def find_session(self, token_hash: str) -> tuple[SessionRow, AccountRow | None] | None:
        query = (
            select(ui_sessions, ui_accounts)
            .select_from(
                ui_sessions.outerjoin(
                    ui_accounts,
                    (ui_sessions.c.source == "local") & (ui_accounts.c.name == ui_sessions.c.subject),
                )
            )
            .where(ui_sessions.c.token_hash == token_hash)
        )
        with self._ui("reading a session") as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        mapping = row._mapping
        session = SessionRow(**{column.name: mapping[column] for column in ui_sessions.columns})
        if mapping[ui_accounts.c.name] is None:
            return session, None
        account = AccountRow(**{column.name: mapping[column] for column in ui_accounts.columns})
        return session, account

    def touch_session(self, token_hash: str, now: datetime) -> None:
        with self._ui("touching a session", write=True) as connection:
            connection.execute(
                update(ui_sessions).where(ui_sessions.c.token_hash == token_hash).values(last_seen_at=now)
            )

    def end_session(self, token_hash: str) -> None:
        with self._ui("ending a session", write=True) as connection:
            connection.execute(delete(ui_sessions).where(ui_sessions.c.token_hash == token_hash))

    def end_sessions(self, subject: str, source: str) -> int:
        with self._ui("ending sessions", write=True) as connection:
            done = connection.execute(
                delete(ui_sessions).where(ui_sessions.c.subject == subject, ui_sessions.c.source == source)
            )
        return int(done.rowcount)

    # ------------------------------------------------------------------ operator tokens

    def create_token(self, token: OperatorToken) -> OperatorToken:
        try:
            with self._ui("creating an operator token", write=True) as connection:
                taken = connection.execute(
                    select(ui_tokens.c.id).where(ui_tokens.c.token_hash == token.token_hash)
                ).first()
                if taken:
                    raise InvalidRequestError("an operator token with this hash exists already")
                connection.execute(insert(ui_tokens).values(**asdict(token)))
        except StoreError:
            if self.find_token(token.token_hash, token.created_at) is not None:
                raise InvalidRequestError("an operator token with this hash exists already") from None
            raise
        return token

    def list_tokens(self, *, include_revoked: bool = False) -> list[OperatorToken]:
        query = select(ui_tokens).order_by(ui_tokens.c.created_at, ui_tokens.c.id)
        if not include_revoked:
            query = query.where(ui_tokens.c.revoked_at.is_(None))
        with self._ui("listing operator tokens") as connection:
            return [_token(row) for row in connection.execute(query)]

    def revoke_token(self, token_id: str, now: datetime) -> OperatorToken:
        with self._ui("revoking an operator token", write=True) as connection:
            row = connection.execute(select(ui_tokens).where(ui_tokens.c.id == token_id)).first()
            if row is None:
                raise NotFoundError(f"no operator token with id {token_id!r}")
            token = _token(row)
            if token.revoked_at is None:
                connection.execute(update(ui_tokens).where(ui_tokens.c.id == token_id).values(revoked_at=now))
                token = replace(token, revoked_at=now)
        return token

    def find_token(self, token_hash: str, now: datetime) -> OperatorToken | None:
        with self._ui("looking up an operator token") as connection:
            row = connection.execute(select(ui_tokens).where(ui_tokens.c.token_hash == token_hash)).first()
        if row is None:
            return None
        token = _token(row)
        if token.last_used_at is None or now - token.last_used_at >= TOKEN_TOUCH_EVERY:
            with self._ui("touching an operator token", write=True) as connection:
                connection.execute(
                    update(ui_tokens).where(ui_tokens.c.id == token.id).values(last_used_at=now)
                )
            token = replace(token, last_used_at=now)
        return token


__all__ = ["SqlUIAccounts"]

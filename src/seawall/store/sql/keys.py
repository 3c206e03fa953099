"""The key store role (:class:`seawall.store.base.KeyStore`) on SQL: the ``api_keys`` table."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from seawall.errors import InvalidRequestError, NotFoundError
from seawall.store.base import ApiKey, KeyScope
from seawall.store.schema import api_keys
from seawall.store.sql.database import SqlRole

#: ``find_key`` writes last_used_at only when the stored value is older than this.
TOUCH_EVERY = timedelta(minutes=1)


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        tenant=row.tenant,
        key_hash=row.key_hash,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        scope=row.scope,
    )


class SqlKeys(SqlRole):
    """App API keys, stored hashed."""

    def create_key(
        self, name: str, tenant: str, key_hash: str, prefix: str, *, scope: KeyScope = "all"
    ) -> ApiKey:
        """Store a new key's hash; the caller generated the key and shows it once."""
        key = ApiKey(
            id=f"key_{secrets.token_hex(6)}",
            name=name,
            tenant=tenant,
            key_hash=key_hash,
            prefix=prefix,
            created_at=self.db.clock(),
            scope=scope,
        )
        with self.db.transaction("creating an API key", write=True) as connection:
            try:
                connection.execute(
                    insert(api_keys).values(
                        id=key.id,
                        name=name,
                        tenant=tenant,
                        key_hash=key_hash,
                        prefix=prefix,
                        created_at=key.created_at,
                        scope=scope,
                    )
                )
            except IntegrityError:
                raise InvalidRequestError(
                    "an API key with this hash exists already", code="duplicate_key"
                ) from None
        return key

    def list_keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[ApiKey]:
        """Keys, oldest first; active ones only unless ``include_revoked``."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.db.transaction("listing API keys") as connection:
            return [_key(row) for row in connection.execute(query)]

    def revoke_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked (idempotent: the first revocation time stays); NotFoundError if unknown."""
        with self.db.transaction("revoking an API key", write=True) as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}", param="key_id")
            key = _key(row)
            if key.revoked_at is None:
                key = replace(key, revoked_at=self.db.clock())
                connection.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=key.revoked_at)
                )
        return key

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked ones too), touching last_used_at at most once a minute."""
        with self.db.transaction("looking up an API key") as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)).first()
        if row is None:
            return None
        key = _key(row)
        now = self.db.clock()
        if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
            stale = now - TOUCH_EVERY
            with self.db.transaction("touching an API key", write=True) as connection:
                connection.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.id == key.id,
                        api_keys.c.last_used_at.is_(None) | (api_keys.c.last_used_at <= stale),
                    )
                    .values(last_used_at=now)
                )
            key = replace(key, last_used_at=now)
        return key


__all__ = ["TOUCH_EVERY", "SqlKeys"]

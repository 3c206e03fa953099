"""The response store role (:class:`seawall.store.base.ResponseStore`) on SQL: the ``responses``
table, Responses API responses kept for ``previous_response_id`` until they expire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select

from seawall.clock import as_utc
from seawall.store.base import StoredResponse
from seawall.store.schema import responses
from seawall.store.sql.database import SqlRole
from seawall.store.windows import PruneClock


def _stored(row: Row[Any]) -> StoredResponse:
    return StoredResponse(
        id=row.id,
        tenant=row.tenant,
        key_id=row.key_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        input_items=list(row.input_items),
        response=dict(row.response),
    )


class SqlResponses(SqlRole):
    """Responses API responses, each one row; expired rows are deleted now and then on a save."""

    def _setup(self) -> None:
        super()._setup()
        self._response_prunes = PruneClock()

    def save_response(self, stored: StoredResponse) -> None:
        """Keep ``stored``; saving an id again replaces it. Now and then (at most every
        PRUNE_EVERY_S) the responses expired by ``stored.created_at`` are deleted too."""
        values = {
            "id": stored.id,
            "tenant": stored.tenant,
            "key_id": stored.key_id,
            "created_at": stored.created_at,
            "expires_at": stored.expires_at,
            "input_items": stored.input_items,
            "response": stored.response,
        }
        upsert = (
            self.db.insert(responses)
            .values(**values)
            .on_conflict_do_update(
                index_elements=[responses.c.id], set_={k: v for k, v in values.items() if k != "id"}
            )
        )
        with self.db.transaction("keeping a response", write=True) as connection:
            connection.execute(upsert)
        now = as_utc(stored.created_at)  # the saver's now: prune what expired by then
        if self._response_prunes.due(now.timestamp()):
            self.prune_responses(now)

    def get_response(self, response_id: str, now: datetime) -> StoredResponse | None:
        """The response, or None when there is none or it expired before ``now``."""
        query = select(responses).where(responses.c.id == response_id, responses.c.expires_at > as_utc(now))
        with self.db.transaction("reading a response") as connection:
            row = connection.execute(query).first()
        return _stored(row) if row is not None else None

    def delete_response(self, response_id: str) -> bool:
        """Forget the response; whether there was one."""
        with self.db.transaction("deleting a response", write=True) as connection:
            done = connection.execute(delete(responses).where(responses.c.id == response_id))
        return bool(done.rowcount)

    def prune_responses(self, now: datetime) -> int:
        """Delete the responses that expired before ``now``; how many."""
        moment = as_utc(now)
        with self.db.transaction("pruning expired responses", write=True) as connection:
            done = connection.execute(delete(responses).where(responses.c.expires_at <= moment))
        self._response_prunes.pruned(moment.timestamp())
        return int(done.rowcount)


__all__ = ["SqlResponses"]

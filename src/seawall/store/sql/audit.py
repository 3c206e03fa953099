"""The audit roles (:class:`seawall.store.base.AuditWriter` and :class:`~seawall.store.base.AuditSearch`)
on SQL: the ``audit_events`` table, hash-chained per tenant, and every query that reads it.

The dashboard's counts are aggregated in the database (GROUP BY time bucket), so a render reads a
few hundred rows whatever the number of records. Two dialects, one result: SQLite
(``json_extract``/``json_each``, times as naive UTC text) and PostgreSQL (``->>``,
``json_array_elements``, ``timestamptz``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    and_,
    bindparam,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.sql.expression import literal_column

from seawall.store.base import DEFAULT_AUDIT_API, AuditPage, AuditQuery, FlagRow, OutcomeRow
from seawall.store.chain import link
from seawall.store.schema import as_utc, audit_events
from seawall.store.sql.database import SqlRole

#: A safety identifier given as its first hex characters (the audit search's prefix match).
HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")


# The statements every audit write runs, built once (building them per record cost SQLAlchemy more
# than the database took to run them): a tenant's last hash (the other for rows without a tenant),
# the row a request id already has, and the new row.
_LAST_HASH = (
    select(audit_events.c.hash)
    .where(audit_events.c.tenant == bindparam("tenant"))
    .order_by(audit_events.c.id.desc())
    .limit(1)
)
_LAST_HASH_NO_TENANT = (
    select(audit_events.c.hash)
    .where(audit_events.c.tenant.is_(None))
    .order_by(audit_events.c.id.desc())
    .limit(1)
)
_STORED_ID = select(audit_events.c.id).where(audit_events.c.request_id == bindparam("request_id"))
_NEW_ROW = insert(audit_events)


def _chain_lock_key(tenant: str | None) -> int:
    """The PostgreSQL advisory lock that serialises one tenant's audit writes (a signed 64-bit int)."""
    digest = hashlib.sha256(
        b"seawall-audit-chain\0" + (tenant or "").encode() + (b"\1" if tenant is None else b"")
    ).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def bucket_of(dialect: str, column: str, bucket_s: int) -> str:
    """The start of the time bucket of ``column`` (a timestamp), in epoch seconds, as SQL."""
    if dialect == "postgresql":
        return f"(floor(extract(epoch from {column}) / {bucket_s}) * {bucket_s})"
    return f"((CAST(strftime('%s', {column}) AS INTEGER) / {bucket_s}) * {bucket_s})"


def bind_time(dialect: str, moment: datetime) -> Any:
    """A time for a text() query: text() bypasses UTCDateTime, so SQLite gets naive UTC text and
    PostgreSQL an aware datetime."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else moment


def _window(since: datetime, until: datetime, tenant: str | None) -> list[ColumnElement[bool]]:
    where = [audit_events.c.time >= since, audit_events.c.time < until, audit_events.c.superseded == false()]
    if tenant is not None:
        where.append(audit_events.c.tenant == tenant)
    return where


def _flags_sql(dialect: str, bucket_s: int, tenant: str | None) -> str:
    """Flagged requests per (bucket, category): categories named by any decision of a record."""
    tenant_sql = " AND a.tenant = :tenant" if tenant is not None else ""
    bucket = bucket_of(dialect, "a.time", bucket_s)
    if dialect == "postgresql":
        return (
            f"SELECT {bucket} AS bucket, c.category, "
            "count(DISTINCT a.id) AS n FROM audit_events a "
            "CROSS JOIN LATERAL json_array_elements(a.record -> 'decisions') AS d(decision) "
            "CROSS JOIN LATERAL json_array_elements_text(d.decision -> 'categories') AS c(category) "
            f"WHERE a.time >= :since AND a.time < :until AND NOT a.superseded{tenant_sql} GROUP BY 1, 2"
        )
    # The LIKE skips, without parsing its JSON, every record that names no category at all.
    return (
        f"SELECT {bucket} AS bucket, c.value AS category, count(DISTINCT a.id) AS n FROM audit_events a, "
        "json_each(a.record, '$.decisions') d, json_each(d.value, '$.categories') c "
        f"WHERE a.time >= :since AND a.time < :until AND NOT a.superseded{tenant_sql} "
        'AND a.record LIKE \'%"categories":["%\' GROUP BY 1, 2'
    )


def _safety_filter(value: str) -> ColumnElement[bool]:
    column = audit_events.c.safety_identifier
    if len(value) < 64 and HEX_PREFIX.fullmatch(value):
        # A prefix of a hex identifier: an index range scan ('g' sorts after every hex digit).
        return and_(column >= value, column < value + "g")
    return column == value


#: Distinct tenants by a loose index scan of (tenant, time): one index probe per tenant, where a
#: GROUP BY would read every record's index entry on each dashboard render.
_TENANTS_SQL = (
    "WITH RECURSIVE t(tenant, n) AS (SELECT min(tenant), 1 FROM audit_events UNION ALL "
    "SELECT (SELECT min(tenant) FROM audit_events WHERE tenant > t.tenant), n + 1 FROM t "
    "WHERE t.tenant IS NOT NULL AND n < :limit) "
    "SELECT tenant FROM t WHERE tenant IS NOT NULL AND n <= :limit ORDER BY tenant"
)


class SqlAudit(SqlRole):
    """Audit records: written into per-tenant hash chains, searched, paged and counted."""

    def write_audit(self, record: dict[str, Any]) -> None:
        """Keep one audit record, linked into its tenant's hash chain (:mod:`seawall.store.chain`):
        the stored record gets ``prev_hash`` (the tenant's last stored ``hash``) and ``hash``.

        Writes for one tenant are serialised so the chain stays linear across threads, processes
        and replicas: SQLite's write transactions take the database's write lock first
        (``BEGIN IMMEDIATE``); on PostgreSQL the transaction takes an advisory lock per tenant
        (``pg_advisory_xact_lock``) before it reads the last hash, and holds it until it commits.

        A record whose ``request_id`` is stored already replaces the stored one in searches (the
        latest record of a request wins); the earlier one stays in the chain, marked
        ``superseded``. ``time`` is an ISO 8601 string or a datetime; the store's clock when absent.
        """
        request_id = record.get("request_id")
        if not request_id:
            raise ValueError("an audit record needs a request_id")
        raw_time = record.get("time")
        if isinstance(raw_time, datetime):
            time = as_utc(raw_time)
        elif isinstance(raw_time, str):
            time = as_utc(datetime.fromisoformat(raw_time))
        else:
            time = self.db.clock()
        tenant = record.get("tenant")
        tenant = None if tenant is None else str(tenant)
        record = {key: value for key, value in record.items() if key not in ("prev_hash", "hash")}
        columns = audit_events.c
        with self.db.transaction("writing an audit record", write=True) as connection:
            if self.db.postgres:
                connection.execute(select(func.pg_advisory_xact_lock(_chain_lock_key(tenant))))
            last = _LAST_HASH_NO_TENANT if tenant is None else _LAST_HASH
            previous = connection.execute(last, {"tenant": tenant} if tenant is not None else {}).scalar()
            digest = link(record, previous)
            stored = connection.execute(_STORED_ID, {"request_id": str(request_id)}).scalar()
            if stored is not None:
                renamed = f"{str(request_id)[:60]}~superseded~{stored}"
                connection.execute(
                    update(audit_events)
                    .where(columns.id == stored)
                    .values(request_id=renamed, superseded=True)
                )
            connection.execute(
                _NEW_ROW,
                {
                    "request_id": str(request_id),
                    "time": time,
                    "tenant": tenant,
                    "safety_identifier": record.get("safety_identifier"),
                    "outcome": record.get("outcome"),
                    "record": record,
                    "prev_hash": previous,
                    "hash": digest,
                },
            )

    def audit_chain(
        self, tenant: str | None = None, *, page: int = 1000
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored audit record (superseded ones included) in the order written, as
        ``("id N", record)`` with the chain's columns as ``prev_hash`` and ``hash``: what
        :func:`seawall.store.chain.verify` walks. Read ``page`` rows per short transaction;
        ``tenant`` limits it to one tenant's chain."""
        columns = audit_events.c
        after = 0
        while True:
            query = (
                select(columns.id, columns.record, columns.prev_hash, columns.hash)
                .where(columns.id > after)
                .order_by(columns.id)
                .limit(page)
            )
            if tenant is not None:
                query = query.where(columns.tenant == tenant)
            with self.db.transaction("reading the audit chain") as connection:
                rows = connection.execute(query).all()
            for row in rows:
                record = dict(row.record)
                if row.hash is not None or "hash" in record:
                    record["prev_hash"] = row.prev_hash
                    record["hash"] = row.hash
                yield f"id {row.id}", record
            if len(rows) < page:
                return
            after = rows[-1].id

    def search_audit(
        self,
        tenant: str | None = None,
        *,
        safety_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records matching every filter given, newest first."""
        columns = audit_events.c
        query = (
            select(columns.record)
            .where(columns.superseded == false())
            .order_by(columns.time.desc(), columns.id.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(columns.tenant == tenant)
        if safety_id is not None:
            query = query.where(columns.safety_identifier == safety_id)
        if outcome is not None:
            query = query.where(columns.outcome == outcome)
        if since is not None:
            query = query.where(columns.time >= since)
        with self.db.transaction("searching audit records") as connection:
            return [dict(record) for record in connection.execute(query).scalars()]

    def audit_page(self, query: AuditQuery) -> AuditPage:
        """One page of audit records matching every filter, newest first, and how many match."""
        columns = audit_events.c
        where: list[ColumnElement[bool]] = [columns.superseded == false()]
        if query.outcome:
            where.append(columns.outcome == query.outcome)
        if query.safety_id:
            where.append(_safety_filter(query.safety_id))
        if query.tenant:
            where.append(columns.tenant == query.tenant)
        if query.since is not None:
            where.append(columns.time >= query.since)
        if query.until is not None:
            where.append(columns.time < query.until)
        if query.api:  # records from before the field: chat completions
            where.append(func.coalesce(columns.record["api"].as_string(), DEFAULT_AUDIT_API) == query.api)
        if query.tier:
            where.append(columns.record["tier"].as_string() == query.tier)
        if query.shadow:  # records without a shadow list give NULL: left out
            shadow = "record -> 'shadow'" if self.db.postgres else "record, '$.shadow'"
            where.append(literal_column(f"json_array_length(audit_events.{shadow}) > 0", Boolean))
        page = max(1, query.page)
        rows_query = (
            select(columns.record)
            .where(*where)
            .order_by(columns.time.desc(), columns.id.desc())
            .limit(query.page_size)
            .offset((page - 1) * query.page_size)
        )
        count_query = select(func.count()).select_from(audit_events).where(*where)
        with self.db.transaction("searching audit records") as connection:
            total = int(connection.execute(count_query).scalar_one())
            records = [dict(record) for record in connection.execute(rows_query).scalars()]
        return AuditPage(rows=records, total=total, page=page, page_size=query.page_size)

    def get_audit(self, request_id: str) -> dict[str, Any] | None:
        """The current audit record of one request."""
        query = select(audit_events.c.record).where(audit_events.c.request_id == request_id)
        with self.db.transaction("reading an audit record") as connection:
            record = connection.execute(query).scalar_one_or_none()
        return dict(record) if record is not None else None

    def audit_exists(self, request_id: str) -> bool:
        """Whether the store holds an audit record of ``request_id``."""
        query = select(audit_events.c.id).where(audit_events.c.request_id == request_id).limit(1)
        with self.db.transaction("looking up an audit record") as connection:
            return connection.execute(query).first() is not None

    def user_tiers(self, tenant: str, safety_ids: Sequence[str]) -> dict[str, str]:
        """The trust tier of each user's latest audit record that names one (superseded records
        left out), by safety identifier: one query, on the (safety_identifier, time) index."""
        if not safety_ids:
            return {}
        columns = audit_events.c
        tier = columns.record["tier"].as_string()
        latest = func.row_number().over(
            partition_by=columns.safety_identifier, order_by=(columns.time.desc(), columns.id.desc())
        )
        ranked = (
            select(columns.safety_identifier, tier.label("tier"), latest.label("rank"))
            .where(
                columns.tenant == tenant,
                columns.safety_identifier.in_(list(dict.fromkeys(safety_ids))),
                columns.superseded == false(),
                tier.is_not(None),
            )
            .subquery("ranked")
        )
        query = select(ranked.c.safety_identifier, ranked.c.tier).where(ranked.c.rank == 1)
        with self.db.transaction("reading users' tiers") as connection:
            return {str(sid): str(name) for sid, name in connection.execute(query).all()}

    def audit_tenants(self, limit: int = 100) -> list[str]:
        """Tenants that have audit records, in order, at most ``limit`` (for the UI's filters)."""
        with self.db.transaction("listing tenants") as connection:
            rows = connection.execute(text(_TENANTS_SQL), {"limit": limit}).scalars()
            return [str(value) for value in rows]

    def audit_counts(
        self, since: datetime, until: datetime, bucket_s: int, tenant: str | None = None
    ) -> tuple[list[OutcomeRow], list[FlagRow]]:
        """(bucket, outcome, risk, n) and (bucket, category, n) rows for records in [since, until)."""
        dialect = self.db.dialect
        bucket: ColumnElement[Any] = literal_column(bucket_of(dialect, "audit_events.time", bucket_s))
        risk_col = audit_events.c.record["risk"].as_string().label("risk")
        by_outcome: Select[Any] = (
            select(bucket.label("bucket"), audit_events.c.outcome, risk_col, func.count().label("n"))
            .where(and_(*_window(since, until, tenant)))
            .group_by(literal_column("1"), audit_events.c.outcome, literal_column("3"))
        )
        flags = text(_flags_sql(dialect, bucket_s, tenant))
        params: dict[str, Any] = {"since": bind_time(dialect, since), "until": bind_time(dialect, until)}
        if tenant is not None:
            params["tenant"] = tenant
        with self.db.transaction("reading the dashboard's figures") as connection:
            outcome_rows: list[OutcomeRow] = [
                (int(b), o, r, int(n)) for b, o, r, n in connection.execute(by_outcome).all()
            ]
            flag_rows: list[FlagRow] = [
                (int(b), str(c), int(n)) for b, c, n in connection.execute(flags, params).all()
            ]
        return outcome_rows, flag_rows


__all__ = ["HEX_PREFIX", "SqlAudit", "bind_time", "bucket_of"]

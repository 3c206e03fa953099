"""The store on SQLAlchemy 2: SQLite for one process, PostgreSQL (psycopg 3) for several replicas.

Every method runs one short transaction on a connection from the engine's pool, so one
:class:`SqlStore` serves many threads. SQLite runs in WAL mode with a busy timeout, and
write transactions begin ``IMMEDIATE`` (they take the write lock first, so two processes
never deadlock upgrading a read lock). Database failures become :class:`StoreError` with
the URL's password hidden.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Row,
    Table,
    and_,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    literal,
    make_url,
    select,
    union,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from seawall.clock import Clock, utc_now
from seawall.errors import InvalidRequestError, NotFoundError, StoreError
from seawall.store.base import (
    REPORT_STATUSES,
    REVIEW_STATUSES,
    ApiKey,
    FilteredAnswer,
    OrgSummary,
    RateLimitResult,
    Report,
    ReportCategory,
    ReportStatus,
    ReviewDecision,
    ReviewEvent,
    ReviewItem,
    ReviewStatus,
    RiskEvent,
    RiskLevel,
    UserState,
    UserStatus,
    UserSummary,
)
from seawall.store.chain import link
from seawall.store.schema import (
    api_keys,
    as_utc,
    audit_events,
    filtered_answers,
    rate_counters,
    reports,
    review_events,
    review_items,
    risk_events,
    user_states,
)

log = logging.getLogger("seawall.store")

#: ``find_key`` writes last_used_at only when the stored value is older than this.
TOUCH_EVERY = timedelta(minutes=1)
#: Expired rate-limit windows are deleted at most this often (seconds of the callers' clock).
PRUNE_EVERY_S = 60.0
#: SQLite waits this long for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Tolerance for float noise in the sliding-window arithmetic.
_EPSILON = 1e-9


# ---------------------------------------------------------------------------- engine


def normalise_url(url: str | URL) -> URL:
    """``url`` with ``~`` expanded in SQLite paths and a psycopg 3 driver for bare ``postgresql``."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            parsed = parsed.set(database=str(Path(database).expanduser()))
    elif backend == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # Only psycopg 3 is a dependency; plain postgresql:// would otherwise ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "postgresql":
        raise StoreError(f"unsupported store URL scheme {parsed.drivername!r}: use sqlite or postgresql")
    return parsed


def is_memory(url: URL) -> bool:
    """Whether ``url`` is an in-memory SQLite database (one connection, shared by all threads)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_folder(url: URL) -> None:
    """Create the folder of a SQLite database file (``url`` as :func:`normalise_url` returns it)."""
    if url.get_backend_name() == "sqlite" and not is_memory(url) and url.database:
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store's folder for {url.database}: {exc}") from None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def make_engine(url: str | URL, *, pool_size: int = 5) -> Engine:
    """A sync engine configured for the store: WAL/busy timeout/foreign keys on SQLite,
    a pre-pinged pool of ``pool_size`` connections on PostgreSQL."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            json_serializer=_json,
            connect_args={"connect_timeout": 10, "application_name": "seawall"},
        )
    memory = is_memory(parsed)
    engine = create_engine(
        parsed,
        json_serializer=_json,
        connect_args={"check_same_thread": False},
        **({"poolclass": StaticPool} if memory else {"pool_size": pool_size, "max_overflow": pool_size}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, decides when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("seawall_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _reason(exc: SQLAlchemyError) -> str:
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(original).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


@contextmanager
def store_errors(engine: Engine, doing: str) -> Iterator[None]:
    """Turn SQLAlchemy and driver errors into :class:`StoreError`, with the password hidden."""
    try:
        yield
    except SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        message = f"store failed while {doing} ({where}): {_reason(exc)}"
        password = engine.url.password
        if password:
            message = message.replace(str(password), "***")
        # The driver's exception stays out of the chain (its text can echo connection details);
        # the log keeps it for debugging.
        log.debug("store error while %s", doing, exc_info=True)
        raise StoreError(message) from None


# ---------------------------------------------------------------------------- rows


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
    )


def _state(row: Row[Any]) -> UserState:
    return UserState(
        tenant=row.tenant,
        safety_id=row.safety_id,
        status=row.status,
        until=row.until,
        reason=row.reason,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _retry_after(limit: int, current: int, previous: int, weight: float, window_s: int) -> float:
    """Seconds until one more hit fits, if nothing else is counted meanwhile (rounded up to 1 ms).

    ``weight`` is the previous window's share now (1 at the window's start, 0 at its end).
    """
    elapsed = (1.0 - weight) * window_s
    if current + 1 <= limit and previous > 0:
        # Room comes back in this window as the previous window's share shrinks.
        fits_at = window_s * (1.0 - (limit - 1 - current) / previous)
        wait = fits_at - elapsed
    else:
        # This window is full: wait for the next, where this window's count is the shrinking share.
        share = max(0.0, 1.0 - (limit - 1) / current) if current > 0 else 0.0
        wait = (window_s - elapsed) + window_s * share
    return max(0.001, math.ceil(wait * 1000 - _EPSILON) / 1000)


def _same_tenant(tenant: str | None) -> Any:
    """Audit rows of ``tenant`` (None: rows without one)."""
    return audit_events.c.tenant.is_(None) if tenant is None else audit_events.c.tenant == tenant


def _chain_lock_key(tenant: str | None) -> int:
    """The PostgreSQL advisory lock that serialises one tenant's audit writes (a signed 64-bit int)."""
    digest = hashlib.sha256(
        b"seawall-audit-chain\0" + (tenant or "").encode() + (b"\1" if tenant is None else b"")
    ).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _unclaimed(now: datetime) -> Any:
    """Nobody holds a live claim on the item at ``now``."""
    columns = review_items.c
    return (
        columns.claimed_by.is_(None) | columns.claim_expires_at.is_(None) | (columns.claim_expires_at <= now)
    )


def _held_by(reviewer: str, now: datetime) -> Any:
    """``reviewer`` holds a live claim on the item at ``now``."""
    columns = review_items.c
    return (columns.claimed_by == reviewer) & (columns.claim_expires_at > now)


def _update_pending(
    connection: Connection, review_id: str, condition: Any, **values: Any
) -> ReviewItem | None:
    """Set ``values`` on the pending item if ``condition`` holds, in one conditional UPDATE; the
    item as updated, or None when nothing matched."""
    columns = review_items.c
    row = connection.execute(
        update(review_items)
        .where(columns.id == review_id, columns.status == "pending", condition)
        .values(**values)
        .returning(review_items)
    ).one_or_none()
    return None if row is None else _review(row)


def _status_counts(
    connection: Connection, table: Table, statuses: tuple[str, ...], tenant: str | None
) -> dict[str, int]:
    """Rows of ``table`` per status, every one of ``statuses`` present (0 when none)."""
    query = select(table.c.status, func.count()).group_by(table.c.status)
    if tenant is not None:
        query = query.where(table.c.tenant == tenant)
    counts = dict.fromkeys(statuses, 0)
    counts.update({str(status): int(count) for status, count in connection.execute(query)})
    return counts


def _review_values(item: ReviewItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "tenant": item.tenant,
        "request_id": item.request_id,
        "completion_id": item.completion_id,
        "safety_id": item.safety_id,
        "status": item.status,
        "domain": item.domain,
        "reasons": list(item.reasons),
        "request": item.request,
        "draft": item.draft,
        "scores": item.scores,
        "sources": [dict(source) for source in item.sources],
        "notes": item.notes,
        "webhook": item.webhook,
        "claimed_by": item.claimed_by,
        "claimed_at": item.claimed_at,
        "claim_expires_at": item.claim_expires_at,
        "decision": item.decision,
        "edited_text": item.edited_text,
        "reason": item.reason,
        "decided_by": item.decided_by,
        "created_at": item.created_at,
        "decided_at": item.decided_at,
    }


def _review(row: Row[Any]) -> ReviewItem:
    return ReviewItem(
        id=row.id,
        tenant=row.tenant,
        request_id=row.request_id,
        status=row.status,
        created_at=row.created_at,
        request=dict(row.request),
        draft=dict(row.draft),
        completion_id=row.completion_id,
        safety_id=row.safety_id,
        domain=row.domain,
        reasons=tuple(row.reasons or ()),
        scores={str(k): float(v) for k, v in (row.scores or {}).items()},
        sources=tuple(dict(source) for source in row.sources or ()),
        notes=row.notes,
        webhook=row.webhook,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        claim_expires_at=row.claim_expires_at,
        decision=row.decision,
        edited_text=row.edited_text,
        reason=row.reason,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
    )


def _report_values(report: Report) -> dict[str, Any]:
    return {
        "id": report.id,
        "tenant": report.tenant,
        "response_id": report.response_id,
        "request_id": report.request_id,
        "review_id": report.review_id,
        "category": report.category,
        "status": report.status,
        "comment": report.comment,
        "contact": report.contact,
        "reporter": report.reporter,
        "notes": [dict(note) for note in report.notes],
        "created_at": report.created_at,
        "updated_at": report.updated_at,
        "updated_by": report.updated_by,
    }


def _report(row: Row[Any]) -> Report:
    return Report(
        id=row.id,
        tenant=row.tenant,
        response_id=row.response_id,
        category=row.category,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        comment=row.comment,
        contact=row.contact,
        reporter=row.reporter,
        request_id=row.request_id,
        review_id=row.review_id,
        notes=tuple(dict(note) for note in row.notes or ()),
        updated_by=row.updated_by,
    )


def _add_event(connection: Connection, event: ReviewEvent) -> None:
    connection.execute(
        insert(review_events).values(
            subject_id=event.subject_id,
            action=event.action,
            actor=event.actor,
            at=event.at,
            detail=event.detail,
        )
    )


# ---------------------------------------------------------------------------- store


class SqlStore:
    """:class:`seawall.store.base.Store` on SQLAlchemy; build it with :func:`seawall.store.open_store`."""

    def __init__(self, engine: Engine, *, clock: Clock | None = None) -> None:
        self.engine = engine
        self._clock = clock or utc_now
        self._postgres = engine.dialect.name == "postgresql"
        # An in-memory SQLite database is one shared connection: one transaction at a time.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if is_memory(engine.url) else nullcontext()
        )
        self._prune_lock = threading.Lock()
        self._pruned_at = -math.inf

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _transaction(self, doing: str, *, write: bool = False) -> Iterator[Connection]:
        with self._serial, store_errors(self.engine, doing), self.engine.connect() as connection:
            if write:
                connection.execution_options(seawall_write=True)
            with connection.begin():
                yield connection

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers (for health checks)."""
        with self._transaction("checking the connection") as connection:
            connection.execute(select(literal(1)))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # ------------------------------------------------------------------ app API keys

    def create_key(self, name: str, tenant: str, key_hash: str, prefix: str) -> ApiKey:
        """Store a new key's hash; the caller generated the key and shows it once."""
        key = ApiKey(
            id=f"key_{secrets.token_hex(6)}",
            name=name,
            tenant=tenant,
            key_hash=key_hash,
            prefix=prefix,
            created_at=self._clock(),
        )
        with self._transaction("creating an API key", write=True) as connection:
            try:
                connection.execute(
                    insert(api_keys).values(
                        id=key.id,
                        name=name,
                        tenant=tenant,
                        key_hash=key_hash,
                        prefix=prefix,
                        created_at=key.created_at,
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
        with self._transaction("listing API keys") as connection:
            return [_key(row) for row in connection.execute(query)]

    def revoke_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked (idempotent: the first revocation time stays); NotFoundError if unknown."""
        with self._transaction("revoking an API key", write=True) as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}", param="key_id")
            key = _key(row)
            if key.revoked_at is None:
                key = replace(key, revoked_at=self._clock())
                connection.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=key.revoked_at)
                )
        return key

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked ones too), touching last_used_at at most once a minute."""
        with self._transaction("looking up an API key") as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)).first()
        if row is None:
            return None
        key = _key(row)
        now = self._clock()
        if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
            stale = now - TOUCH_EVERY
            with self._transaction("touching an API key", write=True) as connection:
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

    # ------------------------------------------------------------------ rate limits

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        """Count one request against ``bucket`` (sliding window over two fixed windows),
        atomically across threads, processes and replicas. A refused hit is not counted.

        The current window's row is incremented by one conditional upsert
        (``INSERT ... ON CONFLICT DO UPDATE ... WHERE count < room RETURNING count``), which
        the database applies under the row's lock; ``room`` is what the previous window's
        weighted count leaves of ``limit``.
        """
        if limit < 1 or window_s < 1:
            raise ValueError(f"a rate limit needs limit >= 1 and window_s >= 1 (got {limit}, {window_s})")
        stamp = as_utc(now).timestamp()
        start = math.floor(stamp / window_s) * window_s
        weight = 1.0 - (stamp - start) / window_s
        table = rate_counters
        with self._transaction("counting a rate-limit hit", write=True) as connection:
            previous = int(
                connection.execute(
                    select(table.c.count).where(
                        table.c.bucket == bucket, table.c.window_start == start - window_s
                    )
                ).scalar()
                or 0
            )
            # The most hits the current window may hold with this one counted.
            room = math.floor(limit - previous * weight + _EPSILON)
            counted: int | None = None
            if room >= 1:
                upsert = (
                    self._insert(table)
                    .values(bucket=bucket, window_start=start, count=1, expires_at=start + 2 * window_s)
                    .on_conflict_do_update(
                        index_elements=[table.c.bucket, table.c.window_start],
                        set_={"count": table.c.count + 1},
                        where=table.c.count < room,
                    )
                    .returning(table.c.count)
                )
                counted = connection.execute(upsert).scalar()
            if counted is None:
                current = int(
                    connection.execute(
                        select(table.c.count).where(table.c.bucket == bucket, table.c.window_start == start)
                    ).scalar()
                    or 0
                )
            else:
                current = int(counted)
        self._maybe_prune(stamp)
        reset_at = datetime.fromtimestamp(start + window_s, UTC)
        if counted is not None:
            return RateLimitResult(True, current + previous * weight, limit, reset_at, 0.0)
        retry = _retry_after(limit, current, previous, weight, window_s)
        return RateLimitResult(False, current + previous * weight, limit, reset_at, retry)

    def prune(self, now: datetime) -> int:
        """Delete rate-limit windows that no hit at ``now`` or later reads; returns how many."""
        stamp = as_utc(now).timestamp()
        with self._transaction("pruning rate-limit windows", write=True) as connection:
            result = connection.execute(delete(rate_counters).where(rate_counters.c.expires_at <= stamp))
        with self._prune_lock:
            self._pruned_at = max(self._pruned_at, stamp)
        return int(result.rowcount)

    def _maybe_prune(self, stamp: float) -> None:
        with self._prune_lock:
            if stamp - self._pruned_at < PRUNE_EVERY_S:
                return
            self._pruned_at = stamp
        self.prune(datetime.fromtimestamp(stamp, UTC))

    # ------------------------------------------------------------------ risk ledger

    def record_event(self, event: RiskEvent) -> None:
        """Keep one medium- or high-risk request of a user."""
        with self._transaction("recording a risk event", write=True) as connection:
            connection.execute(
                insert(risk_events).values(
                    tenant=event.tenant,
                    safety_id=event.safety_id,
                    level=event.level,
                    at=event.at,
                    request_id=event.request_id,
                    categories=list(event.categories),
                )
            )

    def record_filtered_answer(self, answer: FilteredAnswer) -> None:
        """Count one answer that output moderation filtered (per tenant and model, not per user)."""
        with self._transaction("recording a filtered answer", write=True) as connection:
            connection.execute(
                insert(filtered_answers).values(
                    tenant=answer.tenant,
                    model=answer.model,
                    at=answer.at,
                    request_id=answer.request_id,
                    categories=list(answer.categories),
                )
            )

    def count_events(self, tenant: str, safety_id: str, level: RiskLevel, since: datetime) -> int:
        """How many events of ``level`` the user had at or after ``since``."""
        query = select(func.count()).where(
            risk_events.c.tenant == tenant,
            risk_events.c.safety_id == safety_id,
            risk_events.c.level == level,
            risk_events.c.at >= since,
        )
        with self._transaction("counting risk events") as connection:
            return int(connection.execute(query).scalar_one())

    def get_user(self, tenant: str, safety_id: str) -> UserState | None:
        """The user's stored state; None if it was never set."""
        query = select(user_states).where(
            user_states.c.tenant == tenant, user_states.c.safety_id == safety_id
        )
        with self._transaction("reading a user state") as connection:
            row = connection.execute(query).first()
        return None if row is None else _state(row)

    def set_user(self, state: UserState) -> None:
        """Insert or replace the user's state."""
        values = {
            "status": state.status,
            "until": state.until,
            "reason": state.reason,
            "updated_at": state.updated_at,
            "updated_by": state.updated_by,
        }
        statement = self._insert(user_states).values(tenant=state.tenant, safety_id=state.safety_id, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[user_states.c.tenant, user_states.c.safety_id], set_=values
        )
        with self._transaction("writing a user state", write=True) as connection:
            connection.execute(statement)

    def list_users(
        self, tenant: str, *, since: datetime, status: UserStatus | None = None, limit: int = 100
    ) -> list[UserSummary]:
        """Users with a non-ok state or any event since ``since``, most high-risk events first
        (then most medium-risk events, then the latest event); ``status`` keeps only users in
        that state (``"ok"`` includes users with events and no stored state)."""
        events = risk_events.c
        in_window = and_(events.tenant == tenant, events.at >= since)
        counts = (
            select(
                events.safety_id,
                func.sum(case((events.level == "high", 1), else_=0)).label("high"),
                func.sum(case((events.level == "medium", 1), else_=0)).label("medium"),
                func.max(events.at).label("last_event_at"),
            )
            .where(in_window)
            .group_by(events.safety_id)
            .subquery("counts")
        )
        users = union(
            select(events.safety_id).where(in_window),
            select(user_states.c.safety_id).where(
                user_states.c.tenant == tenant, user_states.c.status != "ok"
            ),
        ).subquery("users")
        high = func.coalesce(counts.c.high, 0)
        medium = func.coalesce(counts.c.medium, 0)
        query = (
            select(
                users.c.safety_id,
                high.label("high"),
                medium.label("medium"),
                counts.c.last_event_at,
                user_states,
            )
            .select_from(
                users.outerjoin(counts, counts.c.safety_id == users.c.safety_id).outerjoin(
                    user_states,
                    and_(user_states.c.tenant == tenant, user_states.c.safety_id == users.c.safety_id),
                )
            )
            .order_by(
                high.desc(), medium.desc(), counts.c.last_event_at.desc().nulls_last(), users.c.safety_id
            )
            .limit(limit)
        )
        if status is not None:
            query = query.where(func.coalesce(user_states.c.status, "ok") == status)
        with self._transaction("listing users") as connection:
            rows = connection.execute(query).all()
        summaries: list[UserSummary] = []
        for row in rows:
            mapping = row._mapping
            state = None
            if mapping[user_states.c.status] is not None:
                state = UserState(
                    tenant=tenant,
                    safety_id=mapping[users.c.safety_id],
                    status=mapping[user_states.c.status],
                    until=mapping[user_states.c.until],
                    reason=mapping[user_states.c.reason],
                    updated_at=mapping[user_states.c.updated_at],
                    updated_by=mapping[user_states.c.updated_by],
                )
            summaries.append(
                UserSummary(
                    state=state,
                    tenant=tenant,
                    safety_id=mapping[users.c.safety_id],
                    high=int(mapping["high"]),
                    medium=int(mapping["medium"]),
                    last_event_at=mapping[counts.c.last_event_at],
                )
            )
        return summaries

    def org_summary(self, tenant: str, since: datetime) -> OrgSummary:
        """Events per risk level, users with a high-risk event and filtered answers per model
        since ``since``; users per non-ok status now. ``events`` always has ``medium`` and
        ``high`` (0 when none)."""
        events = risk_events.c
        in_window = and_(events.tenant == tenant, events.at >= since)
        with self._transaction("summarising the organisation") as connection:
            by_level = connection.execute(
                select(events.level, func.count()).where(in_window).group_by(events.level)
            ).all()
            users_with_high = connection.execute(
                select(func.count(events.safety_id.distinct())).where(in_window, events.level == "high")
            ).scalar_one()
            by_status = connection.execute(
                select(user_states.c.status, func.count())
                .where(user_states.c.tenant == tenant, user_states.c.status != "ok")
                .group_by(user_states.c.status)
            ).all()
            answers = filtered_answers.c
            by_model = connection.execute(
                select(answers.model, func.count())
                .where(answers.tenant == tenant, answers.at >= since)
                .group_by(answers.model)
            ).all()
        counts = {"medium": 0, "high": 0}
        counts.update({str(level): int(count) for level, count in by_level})
        return OrgSummary(
            tenant=tenant,
            since=since,
            events=counts,
            users_with_high=int(users_with_high),
            users_by_status={str(status): int(count) for status, count in by_status},
            filtered_answers={str(model): int(count) for model, count in by_model},
        )

    # ------------------------------------------------------------------ audit

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
            time = self._clock()
        tenant = record.get("tenant")
        tenant = None if tenant is None else str(tenant)
        record = {key: value for key, value in record.items() if key not in ("prev_hash", "hash")}
        columns = audit_events.c
        with self._transaction("writing an audit record", write=True) as connection:
            if self._postgres:
                connection.execute(select(func.pg_advisory_xact_lock(_chain_lock_key(tenant))))
            previous = connection.execute(
                select(columns.hash).where(_same_tenant(tenant)).order_by(columns.id.desc()).limit(1)
            ).scalar()
            digest = link(record, previous)
            stored = connection.execute(
                select(columns.id).where(columns.request_id == str(request_id))
            ).scalar()
            if stored is not None:
                renamed = f"{str(request_id)[:60]}~superseded~{stored}"
                connection.execute(
                    update(audit_events)
                    .where(columns.id == stored)
                    .values(request_id=renamed, superseded=True)
                )
            connection.execute(
                insert(audit_events).values(
                    request_id=str(request_id),
                    time=time,
                    tenant=tenant,
                    safety_identifier=record.get("safety_identifier"),
                    outcome=record.get("outcome"),
                    record=record,
                    prev_hash=previous,
                    hash=digest,
                )
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
            with self._transaction("reading the audit chain") as connection:
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
        with self._transaction("searching audit records") as connection:
            return [dict(record) for record in connection.execute(query).scalars()]

    # ------------------------------------------------------------------ human review

    def create_review(self, item: ReviewItem) -> ReviewItem:
        """Store a new pending item and its ``held`` event in one transaction."""
        with self._transaction("holding an answer for review", write=True) as connection:
            try:
                connection.execute(insert(review_items).values(**_review_values(item)))
            except IntegrityError:
                raise InvalidRequestError(
                    f"a review item with id {item.id!r} exists already", code="duplicate_review"
                ) from None
            _add_event(
                connection,
                ReviewEvent(item.id, "held", "gateway", item.created_at, {"reasons": list(item.reasons)}),
            )
        return item

    def get_review(self, review_id: str) -> ReviewItem | None:
        with self._transaction("reading a review item") as connection:
            row = connection.execute(select(review_items).where(review_items.c.id == review_id)).first()
        return None if row is None else _review(row)

    def list_reviews(
        self,
        *,
        tenant: str | None = None,
        status: ReviewStatus | None = None,
        domain: str | None = None,
        claimable_at: datetime | None = None,
        claimed_by: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ReviewItem]:
        """Items matching every filter, oldest first; ``claimable_at``: pending and no live claim."""
        columns = review_items.c
        query = select(review_items).order_by(columns.created_at, columns.id).limit(limit).offset(offset)
        if tenant is not None:
            query = query.where(columns.tenant == tenant)
        if status is not None:
            query = query.where(columns.status == status)
        if domain is not None:
            query = query.where(columns.domain == domain)
        if claimable_at is not None:
            query = query.where(columns.status == "pending", _unclaimed(claimable_at))
        if claimed_by is not None:
            query = query.where(columns.claimed_by == claimed_by)
        with self._transaction("listing review items") as connection:
            return [_review(row) for row in connection.execute(query)]

    def claim_review(self, review_id: str, reviewer: str, now: datetime, ttl_s: int) -> ReviewItem | None:
        """Claim (or extend one's own claim on) a pending item: one conditional UPDATE, so two
        reviewers racing for it cannot both win; None when the claim was lost."""
        expires = now + timedelta(seconds=ttl_s)
        with self._transaction("claiming a review item", write=True) as connection:
            claimed = _update_pending(
                connection,
                review_id,
                _unclaimed(now) | (review_items.c.claimed_by == reviewer),
                claimed_by=reviewer,
                claimed_at=now,
                claim_expires_at=expires,
            )
            if claimed is not None:
                _add_event(
                    connection, ReviewEvent(review_id, "claimed", reviewer, now, {"expires_at": expires})
                )
        return claimed

    def release_review(self, review_id: str, reviewer: str, now: datetime) -> ReviewItem | None:
        """Give up ``reviewer``'s live claim on a pending item; None if they held none."""
        with self._transaction("releasing a review item", write=True) as connection:
            released = _update_pending(
                connection,
                review_id,
                _held_by(reviewer, now),
                claimed_by=None,
                claimed_at=None,
                claim_expires_at=None,
            )
            if released is not None:
                _add_event(connection, ReviewEvent(review_id, "released", reviewer, now))
        return released

    def decide_review(
        self,
        review_id: str,
        reviewer: str,
        decision: ReviewDecision,
        now: datetime,
        *,
        edited_text: str | None = None,
        reason: str | None = None,
    ) -> ReviewItem | None:
        """Record a decision with its event in one transaction, if ``reviewer`` holds a live claim."""
        status = {"approve": "approved", "edit": "edited", "reject": "rejected"}[decision]
        with self._transaction("deciding a review item", write=True) as connection:
            decided = _update_pending(
                connection,
                review_id,
                _held_by(reviewer, now),
                status=status,
                decision=decision,
                edited_text=edited_text,
                reason=reason,
                decided_by=reviewer,
                decided_at=now,
                claim_expires_at=None,
            )
            if decided is None:
                return None
            detail: dict[str, Any] = {}
            if edited_text is not None:
                detail["edited_chars"] = len(edited_text)
            if reason:
                detail["reason"] = reason
            _add_event(connection, ReviewEvent(review_id, status, reviewer, now, detail))
        return decided

    def review_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Items per status (every status present)."""
        with self._transaction("counting review items") as connection:
            return _status_counts(connection, review_items, REVIEW_STATUSES, tenant)

    def list_review_events(self, subject_id: str) -> list[ReviewEvent]:
        """The trail of a review item or a report, oldest first."""
        columns = review_events.c
        query = select(review_events).where(columns.subject_id == subject_id).order_by(columns.at, columns.id)
        with self._transaction("reading review events") as connection:
            return [
                ReviewEvent(row.subject_id, row.action, row.actor, row.at, dict(row.detail), row.id)
                for row in connection.execute(query)
            ]

    # ------------------------------------------------------------------ user reports

    def create_report(self, report: Report) -> Report:
        """Store a new report and its ``reported`` event in one transaction."""
        with self._transaction("storing a user report", write=True) as connection:
            connection.execute(insert(reports).values(**_report_values(report)))
            _add_event(
                connection,
                ReviewEvent(report.id, "reported", "user", report.created_at, {"category": report.category}),
            )
        return report

    def get_report(self, report_id: str) -> Report | None:
        with self._transaction("reading a user report") as connection:
            row = connection.execute(select(reports).where(reports.c.id == report_id)).first()
        return None if row is None else _report(row)

    def list_reports(
        self,
        *,
        tenant: str | None = None,
        status: ReportStatus | None = None,
        category: ReportCategory | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Report]:
        """Reports matching every filter, newest first."""
        columns = reports.c
        query = select(reports).order_by(columns.created_at.desc(), columns.id).limit(limit).offset(offset)
        if tenant is not None:
            query = query.where(columns.tenant == tenant)
        if status is not None:
            query = query.where(columns.status == status)
        if category is not None:
            query = query.where(columns.category == category)
        with self._transaction("listing user reports") as connection:
            return [_report(row) for row in connection.execute(query)]

    def triage_report(
        self, report_id: str, actor: str, now: datetime, *, status: ReportStatus | None, note: str | None
    ) -> Report | None:
        """Move a report to ``status`` and/or add a note (row locked, so notes are never lost)."""
        columns = reports.c
        with self._transaction("triaging a user report", write=True) as connection:
            row = connection.execute(select(reports).where(columns.id == report_id).with_for_update()).first()
            if row is None:
                return None
            notes = list(row.notes or [])
            if note:
                notes.append(
                    {"at": now.isoformat(), "by": actor, "text": note, "status": status or row.status}
                )
            values: dict[str, Any] = {"notes": notes, "updated_at": now, "updated_by": actor}
            if status is not None:
                values["status"] = status
            updated = connection.execute(
                update(reports).where(columns.id == report_id).values(**values).returning(reports)
            ).one()
            detail: dict[str, Any] = {"from": row.status, "to": status or row.status}
            if note:
                detail["note"] = note
            _add_event(connection, ReviewEvent(report_id, "triaged", actor, now, detail))
        return _report(updated)

    def report_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Reports per status (every status present)."""
        with self._transaction("counting user reports") as connection:
            return _status_counts(connection, reports, REPORT_STATUSES, tenant)


__all__ = ["PRUNE_EVERY_S", "TOUCH_EVERY", "SqlStore", "make_engine", "normalise_url", "store_errors"]

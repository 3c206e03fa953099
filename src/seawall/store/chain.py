"""The audit trail's hash chain: each record carries the hash of the tenant's previous record.

A record's ``hash`` is SHA-256 over its canonical JSON (keys sorted, no spaces, UTF-8, the
``hash`` field itself left out, ``prev_hash`` included); ``prev_hash`` is the ``hash`` of the
same tenant's previous record, ``None`` for a tenant's first. Editing a record changes its
hash; deleting or reordering records breaks the next record's ``prev_hash``. What the chain
cannot show alone is records cut from the *end* (keep the last hash somewhere else to check that).

The gateway keeps two chains: one in the audit file (per file, the order the process wrote
it) and one in the store (per tenant, across every replica writing to it; see
:meth:`seawall.store.base.AuditWriter.write_audit`, on every store). :func:`verify` checks either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The genesis value: a tenant's first record has no previous hash.
GENESIS: str | None = None
#: What ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)`` uses,
#: built once (every gateway request hashes its record).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: its JSON with sorted keys, ``hash`` left out."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return _CANONICAL.encode(body).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of :func:`canonical` of ``record`` (which must hold its ``prev_hash``)."""
    return hashlib.sha256(canonical(record)).hexdigest()


def link(record: dict[str, Any], prev_hash: str | None) -> str:
    """Set ``prev_hash`` and ``hash`` on ``record`` (in place); its hash."""
    record.pop("hash", None)
    record["prev_hash"] = prev_hash
    record["hash"] = record_hash(record)
    return str(record["hash"])


@dataclass(frozen=True)
class Break:
    """The first broken link: the record's position (1-based), its id, its tenant and why."""

    number: int
    record_id: str | None
    tenant: str | None
    reason: str

    def __str__(self) -> str:
        name = self.record_id or "no request_id"
        return f"record {self.number} ({name}, tenant {self.tenant!r}): {self.reason}"


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` found: records checked, tenants seen, and the first break (None if intact)."""

    records: int
    tenants: int
    broken: Break | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify(
    records: Iterable[tuple[str | None, Mapping[str, Any] | None]], *, continued: bool = False
) -> Verified:
    """Walk ``records`` (``(id, record)`` in the order written; ``record`` None for a line that is
    not a JSON object) and report the first broken link.

    ``continued``: a tenant's first record may point at a previous hash (a file rotated or a
    store pruned from the start); otherwise it must be a genesis record.
    """
    last: dict[str | None, str | None] = {}
    number = 0
    for number, (record_id, record) in enumerate(records, start=1):
        if record is None:
            return Verified(number, len(last), Break(number, record_id, None, "not a JSON object (edited?)"))
        tenant = record.get("tenant")
        tenant = None if tenant is None else str(tenant)
        rid = record.get("request_id") or record_id
        rid = None if rid is None else str(rid)
        stored = record.get("hash")
        if not isinstance(stored, str) or "prev_hash" not in record:
            reason = "no hash: not written by a chaining seawall, or the hash was removed"
            return Verified(number, len(last), Break(number, rid, tenant, reason))
        if record_hash(record) != stored:
            reason = "its hash does not match its content (the record was edited)"
            return Verified(number, len(last), Break(number, rid, tenant, reason))
        prev = record.get("prev_hash")
        if tenant in last:
            expected = last[tenant]
            if prev != expected:
                reason = (
                    f"prev_hash {str(prev)[:12]}… is not the hash of the tenant's previous record "
                    f"{str(expected)[:12]}… (a record before it was deleted, or records were reordered)"
                )
                return Verified(number, len(last), Break(number, rid, tenant, reason))
        elif prev is not GENESIS and not continued:
            reason = (
                "the tenant's first record points at a previous one (records before it were deleted "
                "or moved; pass --continued for a rotated file)"
            )
            return Verified(number, len(last), Break(number, rid, tenant, reason))
        last[tenant] = stored
    return Verified(number, len(last), None)


def read_jsonl(lines: Iterable[str]) -> Iterable[tuple[str | None, Mapping[str, Any] | None]]:
    """``(line number, record)`` for each non-empty line of an audit file (record None if not an object)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        yield f"line {number}", value if isinstance(value, dict) else None


def last_hashes(lines: Iterable[str]) -> dict[str | None, str]:
    """The last ``hash`` per tenant in an audit file's lines (where a writer picks the chain up)."""
    found: dict[str | None, str] = {}
    for _, record in read_jsonl(lines):
        if record is not None and isinstance(record.get("hash"), str):
            tenant = record.get("tenant")
            found[None if tenant is None else str(tenant)] = str(record["hash"])
    return found


__all__ = [
    "GENESIS",
    "Break",
    "Verified",
    "canonical",
    "last_hashes",
    "link",
    "read_jsonl",
    "record_hash",
    "verify",
]

"""The gateway's hot path kept its behaviour while it got cheaper: the key check answered from its
cache on the event loop, the standing and rate-limit store calls made in one thread-pool hop, and
audit records handed to the store writer without waking it in the middle of an answer."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import Response

from backend_standins import Recorded, StandIn, chat_model_reply, stand_in
from seawall.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from seawall.gateway.access import KeyAuthenticator
from seawall.gateway.audit import AuditLog, AuditRecord
from seawall.gateway.identity import hash_api_key, safety_identifier
from seawall.gateway.pipeline import Gateway
from seawall.gateway.risk import RiskLedger
from seawall.gateway.steps import RateLimits, Standing
from seawall.service import ModerationService
from seawall.settings import Settings, load_settings
from seawall.store import open_store
from seawall.store.base import Store
from seawall.store.chain import verify
from seawall.store.memory import MemoryStore

MODEL = "gpt-test"
TENANT = "acme"


async def _reply(request: Recorded) -> Response:
    return chat_model_reply(request, MODEL, "Hello.")


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandIn]:
    with stand_in(_reply) as running:
        yield running


def settings_for(tmp: Path, upstream_url: str, **gateway: Any) -> Settings:
    return load_settings(
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0, "total_timeout_s": 20},
            "secret_file": str(tmp / "secret"),
            "audit_file": str(tmp / "audit.jsonl"),
            "tenant": TENANT,
            "input_moderation": False,
            "output_moderation": False,
            "topic_guard": False,
            "rate_limits": {"per_user": {"requests": 2, "window_s": 600}},
            **gateway,
        },
        store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
    )


def run_gateway(settings: Settings, use: Any) -> Any:
    """``use(gateway, store)`` against a gateway on the settings' SQLite store."""

    async def run() -> Any:
        service = ModerationService(settings)
        store = open_store(settings.store)
        gateway = Gateway(settings, service, store=store)
        try:
            return await use(gateway, store)
        finally:
            await gateway.aclose()
            await service.aclose()
            store.close()

    return asyncio.run(run())


def ask(user: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "user": user}


async def status_of(gateway: Gateway, user: str) -> int | str:
    """200, or the code of the error the request was refused with."""
    try:
        await gateway.chat(ask(user), {})
    except (PermissionDeniedError, RateLimitError) as exc:
        return str(exc.code)
    return 200


# ----------------------------------------------------------------- standing and rate limits


def test_a_refused_user_uses_no_rate_limit_and_the_limit_still_holds(
    tmp_path: Path, upstream: StandIn
) -> None:
    """Standing and rate limits share one store hop; a blocked user's refused requests are not
    counted (standing refuses before the count), and the count still refuses at the limit."""
    settings = settings_for(tmp_path, upstream.url)

    async def use(gateway: Gateway, store: Store) -> list[int | str]:
        standing, limits = gateway.steps[1], gateway.steps[2]
        assert isinstance(standing, Standing) and isinstance(limits, RateLimits)
        assert standing.then is limits
        ledger = RiskLedger(store, settings.gateway.risk)
        mallory = safety_identifier(gateway.secret, TENANT, "mallory")
        ledger.block(TENANT, mallory, "test", "abuse report", duration_s=3600)
        statuses = [await status_of(gateway, "mallory") for _ in range(3)]
        ledger.clear(TENANT, mallory, "test")
        statuses += [await status_of(gateway, "mallory") for _ in range(3)]
        return statuses

    assert run_gateway(settings, use) == ["user_blocked"] * 3 + [200, 200, "rate_limit_exceeded"]


def test_a_step_between_standing_and_rate_limits_keeps_them_apart(
    tmp_path: Path, upstream: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With another step between them, the rate-limit step counts on its own, after that step."""
    from test_gateway_steps import ENTRY_POINTS, PLUGIN, PLUGIN_MODULE  # the plugin distribution

    site = tmp_path / "site"
    (site / f"{PLUGIN_MODULE}-0.1.dist-info").mkdir(parents=True)
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN)
    (site / f"{PLUGIN_MODULE}-0.1.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PLUGIN_MODULE}\nVersion: 0.1\n"
    )
    (site / f"{PLUGIN_MODULE}-0.1.dist-info" / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, PLUGIN_MODULE, raising=False)
    settings = settings_for(tmp_path, upstream.url, extra_steps=[{"name": "tag", "after": "standing"}])

    async def use(gateway: Gateway, store: Store) -> tuple[list[str], list[int | str]]:
        standing = gateway.steps[1]
        assert isinstance(standing, Standing) and standing.then is None
        return [s.name for s in gateway.steps[:4]], [await status_of(gateway, "oscar") for _ in range(3)]

    names, statuses = run_gateway(settings, use)
    assert names == ["identity", "standing", "tag", "rate_limits"]
    assert statuses == [200, 200, "rate_limit_exceeded"]


# ----------------------------------------------------------------- the key check


def test_the_cached_key_check_answers_as_the_store_would_or_not_at_all() -> None:
    store = MemoryStore()
    key = store.create_key("app", TENANT, hash_api_key("sw-good"), "sw-go")
    revoked = store.create_key("old", TENANT, hash_api_key("sw-old"), "sw-ol")
    store.revoke_key(revoked.id)
    access = KeyAuthenticator([], store, default_tenant="default")
    # Nothing cached yet: the cache cannot answer, the store must be asked.
    assert access.authenticate_cached("Bearer sw-good") is None
    assert access.authenticate("Bearer sw-good").key_id == key.id
    assert access.authenticate_cached("Bearer sw-good") == access.authenticate("Bearer sw-good")
    with pytest.raises(AuthenticationError, match="revoked"):
        access.authenticate("Bearer sw-old")
    with pytest.raises(AuthenticationError, match="revoked"):  # the same error from the cache
        access.authenticate_cached("Bearer sw-old")
    assert access.authenticate_cached("Bearer sw-unknown") is None
    with pytest.raises(AuthenticationError, match="Incorrect"):
        access.authenticate("Bearer sw-unknown")
    with pytest.raises(AuthenticationError, match="Missing"):  # a key is required: one exists
        access.authenticate_cached(None)
    settings_keys = KeyAuthenticator([], None, default_tenant="default")
    assert settings_keys.authenticate_cached(None) == settings_keys.authenticate(None)


# ----------------------------------------------------------------- the audit store writer


def record(index: int) -> AuditRecord:
    audit = AuditRecord(f"swreq-{index:04d}", TENANT, stream=False)
    audit.outcome = "ok"
    return audit


def stored_ids(store: Store) -> list[str]:
    return [r["request_id"] for _, r in store.audit_chain(TENANT)]


def test_records_written_on_an_event_loop_reach_the_store_in_order(tmp_path: Path) -> None:
    """Queued on a loop, records wake the writer at the loop's next turn; flush waits for them."""
    store = open_store(load_settings(store={"url": f"sqlite:///{tmp_path / 'a.db'}"}).store)
    log = AuditLog(tmp_path / "audit.jsonl", store)

    async def write_some() -> None:
        for index in range(40):
            log.write(record(index))
            if index % 7 == 0:
                await asyncio.sleep(0)  # a turn of the loop: the writer starts on what came

    try:
        asyncio.run(write_some())
        log.flush()
        assert stored_ids(store) == [f"swreq-{index:04d}" for index in range(40)]
        # From a thread without a loop the writer is woken at once.
        worker = threading.Thread(target=lambda: [log.write(record(index)) for index in range(40, 45)])
        worker.start()
        worker.join()
        log.flush()
        assert stored_ids(store)[-5:] == [f"swreq-{index:04d}" for index in range(40, 45)]
        checked = verify(store.audit_chain(TENANT))
        assert checked.intact and checked.records == 45
    finally:
        log.close()
        store.close()


def test_closing_stores_what_a_closed_loop_never_woke_the_writer_for(tmp_path: Path) -> None:
    """A loop that ends before its next turn never wakes the writer: closing still stores it all."""
    store = open_store(load_settings(store={"url": f"sqlite:///{tmp_path / 'a.db'}"}).store)
    log = AuditLog(None, store)

    async def write_and_leave() -> None:
        for index in range(3):
            log.write(record(index))

    try:
        asyncio.run(write_and_leave())
        log.close()
        assert stored_ids(store) == ["swreq-0000", "swreq-0001", "swreq-0002"]
    finally:
        store.close()

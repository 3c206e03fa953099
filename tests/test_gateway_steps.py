"""The request path as data: the documented order is the runner's, steps of one's own come from
the ``seawall.steps`` entry points (a real distribution on ``sys.path``), and the scope settles
and audits a request exactly once."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.responses import Response

import seawall.gateway.pipeline as pipeline
from backend_standins import Recorded, StandIn, json_reply, stand_in
from seawall.errors import ConfigurationError, GuardFailedError, InvalidRequestError, SeawallError
from seawall.gateway.audit import AuditRecord
from seawall.gateway.pipeline import Gateway, GatewayResponse
from seawall.gateway.runner import STEP_ENTRY_POINTS, RequestContext, RequestScope, available_steps
from seawall.server.app import create_app
from seawall.service import ModerationService
from seawall.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-test"
ANSWER = "Paris is the capital of France."
CANNED = "What are your opening hours?"

#: A plugin distribution: its module and its entry points, written to a folder put on sys.path.
PLUGIN_MODULE = "seawall_test_steps"
PLUGIN = '''
from seawall.errors import BackendError
from seawall.gateway.runner import Answer


class Tag:
    """Marks every request; answers one question itself."""

    name = "tag"

    def __init__(self, gateway):
        self.tenant = gateway.settings.tenant

    async def run(self, ctx):
        ctx.response_headers["x-test-tag"] = self.tenant
        ctx.audit.decide("tag", "allow")
        if ctx.body["messages"][-1]["content"] == "What are your opening hours?":
            text = "Nine to five."
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            return Answer({"id": "chatcmpl-tag", "object": "chat.completion", "created": 1,
                           "model": ctx.body["model"], "choices": [choice]})
        return None


class Broken:
    name = "broken"

    def __init__(self, gateway):
        pass

    async def run(self, ctx):
        raise KeyError("a bug in the plugin")


class Down:
    name = "down"

    def __init__(self, gateway):
        pass

    async def run(self, ctx):
        raise BackendError("the plugin's classifier is down")
'''
ENTRY_POINTS = f"""[{STEP_ENTRY_POINTS}]
tag = {PLUGIN_MODULE}:Tag
broken = {PLUGIN_MODULE}:Broken
down = {PLUGIN_MODULE}:Down
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution ``seawall-test-steps`` installed the way pip lays one out: a module and a
    ``.dist-info`` with ``entry_points.txt``, in a folder on ``sys.path``."""
    site = tmp_path / "site"
    info = site / "seawall_test_steps-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: seawall-test-steps\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, PLUGIN_MODULE, raising=False)
    return site


async def _reply(request: Recorded) -> Response:
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]})
    if request.body.get("stream"):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"content": ANSWER}, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")
    message = {"role": "assistant", "content": ANSWER}
    return json_reply(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandIn]:
    with stand_in(_reply) as running:
        yield running


def settings_for(
    tmp: Path, upstream_url: str, *, review: dict[str, Any] | None = None, **gateway: Any
) -> Settings:
    return load_settings(
        review=review or {},
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0, "total_timeout_s": 20},
            "secret_file": str(tmp / "secret"),
            "audit_file": str(tmp / "audit.jsonl"),
            "tenant": "acme",
            "risk": {"enabled": False},
            "rate_limits": {"per_user": None},
            **gateway,
        },
        store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
    )


def question(text: str = "What is the capital of France?") -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


def with_gateway(settings: Settings, use: Any) -> Any:
    """Run ``use(gateway)`` (a coroutine function) against a gateway built from ``settings``."""

    async def run() -> Any:
        service = ModerationService(settings)
        gateway = Gateway(settings, service)
        try:
            return await use(gateway)
        finally:
            await gateway.aclose()
            await service.aclose()

    return asyncio.run(run())


def audit_records(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "audit.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------- the documented order


def numbered_bold_names(text: str) -> list[str]:
    """The bold names of a numbered list's items (``1. **Input moderation.** ...``) as step names."""
    names = re.findall(r"^\s*\d+\. \*\*([^*]+)\*\*", text, flags=re.MULTILINE)
    return [name.strip(" .:").lower().replace(" ", "_") for name in names]


def readme_pipeline_list() -> str:
    """The README's list under "Each request goes through one pipeline", up to the prose after it."""
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index("Each request goes through one pipeline") :].splitlines()
    block: list[str] = []
    for line in after[next(i for i, line in enumerate(after) if line.startswith("1. ")) :]:
        if line and not line[0].isdigit() and not line[0].isspace():
            break
        block.append(line)
    return "\n".join(block)


def test_the_readme_and_the_module_docstring_list_the_steps_in_the_order_the_runner_uses(
    tmp_path: Path, upstream: StandIn
) -> None:
    """With every control on, the runner's steps are the ones the README and the docstring list."""
    settings = settings_for(
        tmp_path,
        upstream.url,
        review={"enabled": True},
        risk={"enabled": True},
        topic_guard=True,
    )
    with TestClient(create_app(settings)) as client:
        gateway: Gateway = client.app.state.gateway  # type: ignore[attr-defined]
        names = [step.name for step in gateway.steps]
        stream_names = [step.name for step in gateway.stream_steps]
        held_names = [step.name for step in gateway.held_steps]
        answer_names = [step.name for step in gateway.answer_steps]
    assert names == [
        "identity",
        "standing",
        "rate_limits",
        "limits",
        "input_moderation",
        "untrusted_content",
        "routing",
        "prompt",
        "upstream",
        "output_moderation",
        "review",
    ]
    assert numbered_bold_names(readme_pipeline_list()) == names
    assert pipeline.__doc__ is not None
    assert numbered_bold_names(pipeline.__doc__) == names
    upstream_at = names.index("upstream")
    assert stream_names == [*names[:upstream_at], "review_route"]
    assert held_names == names[upstream_at:]
    # A stream's answer: the stream guard, then the tool calls held to its end (README, item 10).
    assert answer_names == ["output_moderation", "tool_call_moderation"]
    assert "`Gateway.answer_steps`" in readme_pipeline_list()


def test_a_control_that_is_off_is_a_step_left_out(tmp_path: Path, upstream: StandIn) -> None:
    settings = settings_for(
        tmp_path, upstream.url, input_moderation=False, output_moderation=False, topic_guard=False
    )

    async def use(gateway: Gateway) -> list[str]:
        return [step.name for step in gateway.steps]

    # No store (so no ledger and no rate limits): no standing or rate_limits step; no knowledge
    # base or topic guard: no routing; no review hook: no review.
    assert with_gateway(settings, use) == ["identity", "limits", "prompt", "upstream"]

    async def answer_steps(gateway: Gateway) -> list[str]:
        return [step.name for step in gateway.answer_steps]

    assert with_gateway(settings, answer_steps) == []


# ----------------------------------------------------------------- steps of one's own


def test_an_extra_step_from_an_entry_point_runs_where_the_settings_place_it(
    tmp_path: Path, upstream: StandIn, plugin: Path
) -> None:
    assert {"tag", "broken", "down"} <= set(available_steps())
    settings = settings_for(tmp_path, upstream.url, extra_steps=[{"name": "tag", "before": "prompt"}])
    upstream.requests.clear()

    async def use(gateway: Gateway) -> tuple[list[str], GatewayResponse, GatewayResponse, bytes]:
        names = [step.name for step in gateway.steps]
        plain = await gateway.chat(question(), {})
        canned = await gateway.stream({**question(CANNED), "stream": True}, {})
        assert canned.stream is not None
        streamed = b"".join([piece async for piece in canned.stream])
        return names, plain, canned, streamed

    names, plain, canned, streamed = with_gateway(settings, use)
    assert names.index("tag") == names.index("prompt") - 1
    assert plain.headers["x-test-tag"] == "acme" and plain.body is not None
    assert plain.body["choices"][0]["message"]["content"] == ANSWER
    # The step's own answer ends the request before the upstream, streamed like any local answer.
    assert canned.headers["x-test-tag"] == "acme" and b"Nine to five." in streamed
    assert streamed.endswith(b"data: [DONE]\n\n")
    assert [r.body["messages"][-1]["content"] for r in upstream.requests if r.method == "POST"] == [
        "What is the capital of France?"
    ]
    first, second = audit_records(tmp_path)
    assert "tag" in first["latency_ms"] and {"step": "tag", "action": "allow"} in [
        {"step": d["step"], "action": d["action"]} for d in first["decisions"]
    ]
    assert first["outcome"] == "ok" and second["stream"] is True and "tag" in second["latency_ms"]


def test_an_extra_step_can_run_after_the_upstream(tmp_path: Path, upstream: StandIn, plugin: Path) -> None:
    settings = settings_for(
        tmp_path, upstream.url, extra_steps=[{"name": "tag", "after": "output_moderation"}]
    )

    async def use(gateway: Gateway) -> tuple[list[str], GatewayResponse]:
        return [step.name for step in gateway.steps], await gateway.chat(question(), {})

    names, response = with_gateway(settings, use)
    assert names[-2:] == ["output_moderation", "tag"]
    assert response.headers["x-test-tag"] == "acme"


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_an_extra_step_follows_the_guard_failure_policy(
    tmp_path: Path, upstream: StandIn, plugin: Path, fail_mode: str
) -> None:
    """A step of one's own is a guard: GuardUnavailableError follows fail_mode, a bug is a 500."""
    settings = settings_for(
        tmp_path,
        upstream.url,
        fail_mode=fail_mode,
        extra_steps=[{"name": "down", "after": "identity"}, {"name": "broken", "before": "upstream"}],
    )

    async def use(gateway: Gateway) -> SeawallError:
        with pytest.raises(SeawallError) as caught:
            await gateway.chat(question(), {})
        return caught.value

    error = with_gateway(settings, use)
    [record] = audit_records(tmp_path)
    actions = {d["step"]: d["action"] for d in record["decisions"]}
    if fail_mode == "closed":
        assert isinstance(error, GuardFailedError) and error.status_code == 503
        assert actions == {"down": "failed_closed"} and record["outcome"] == "guard_failed"
    else:  # the unavailable step is let through; the broken one never is
        assert error.status_code == 500 and error.code == "guard_error"
        assert actions["down"] == "failed_open" and actions["broken"] == "error"
        assert record["outcome"] == "error" and record["upstream"] is None


def test_extra_steps_that_cannot_be_placed_are_configuration_errors(
    tmp_path: Path, upstream: StandIn, plugin: Path
) -> None:
    with pytest.raises(ConfigurationError, match="exactly one of 'before' and 'after'"):
        settings_for(tmp_path, upstream.url, extra_steps=[{"name": "tag"}])
    unknown = settings_for(tmp_path, upstream.url, extra_steps=[{"name": "nope", "before": "prompt"}])
    with pytest.raises(ConfigurationError, match=r"no step 'nope' is registered; known: .*tag"):
        with_gateway(unknown, lambda gateway: asyncio.sleep(0))
    # Review is off: its step is not on the path, so nothing can be placed by it.
    absent = settings_for(tmp_path, upstream.url, extra_steps=[{"name": "tag", "before": "review"}])
    with pytest.raises(ConfigurationError, match="'review', which is not on the request path"):
        with_gateway(absent, lambda gateway: asyncio.sleep(0))


# ----------------------------------------------------------------- the scope


class Counter:
    def __init__(self) -> None:
        self.settled = 0
        self.written = 0

    async def settle(self, ctx: RequestContext) -> None:
        self.settled += 1

    def write(self, record: AuditRecord) -> None:
        self.written += 1


def scope_and_counter() -> tuple[RequestScope, Counter]:
    counter = Counter()
    ctx = RequestContext({}, {}, AuditRecord("swreq-test", "acme", stream=False))
    return RequestScope(ctx, counter.settle, counter.write), counter


def test_the_scope_settles_and_writes_exactly_once_on_every_exit() -> None:
    async def run() -> None:
        scope, counter = scope_and_counter()
        async with scope:
            pass
        assert (counter.settled, counter.written) == (1, 1)

        scope, counter = scope_and_counter()
        with pytest.raises(InvalidRequestError):
            async with scope:
                raise InvalidRequestError("bad", code="too_many_messages")
        assert (counter.settled, counter.written) == (1, 1)
        assert scope.ctx.audit.outcome == "invalid_request"

        scope, counter = scope_and_counter()
        with pytest.raises(RuntimeError):
            async with scope:
                raise RuntimeError("a bug")
        assert (counter.settled, counter.written) == (0, 1)  # a bug is not settled; the record says error

        scope, counter = scope_and_counter()
        async with scope:
            scope.hand_off()  # a stream: its generator finishes the request
        assert (counter.settled, counter.written) == (0, 0)
        await scope.finish()
        await scope.finish()
        assert (counter.settled, counter.written) == (1, 1)

    asyncio.run(run())


def test_review_off_leaves_the_review_steps_out(tmp_path: Path, upstream: StandIn) -> None:
    """The server always hands the gateway a review hook; with review.enabled off it has no step."""
    settings = settings_for(tmp_path, upstream.url)
    assert settings.review.enabled is False
    with TestClient(create_app(settings)) as client:
        gateway: Gateway = client.app.state.gateway  # type: ignore[attr-defined]
        names = [step.name for step in gateway.steps]
        stream_names = [step.name for step in gateway.stream_steps]
    assert names[-2:] == ["upstream", "output_moderation"]
    assert "review_route" not in stream_names and "rate_limits" in names

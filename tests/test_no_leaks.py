"""No raw user id, secret or message text in logs, metrics or the audit file.

Real requests — moderation, plain, streamed, refused, held and failing chat completions, a
user report, reviewer actions, UI sign-ins, a bad key, an image URL — go through a real server
with a distinctive marker in every user id, key, token, password and text. Then everything the
server wrote is searched for the markers:

* a real ``seawall serve`` subprocess at ``log_level: debug`` (uvicorn's access log included): its
  stdout and stderr;
* the app in this process with a handler on the root logger at DEBUG: every record of every
  library (httpx, httpcore, uvicorn, seawall), message, arguments and traceback;
* in both, ``GET /metrics`` and the gateway's JSONL audit file.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.responses import Response, StreamingResponse

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import running_server, served_port, subprocess_env
from seawall.settings import load_settings
from seawall.store import open_store

#: Every marker holds this, so one search finds any of them.
TAG = "QZX7"
MARKERS = {
    "user id": f"user-{TAG}-ann",
    "session id": f"sess-{TAG}-0123456789",
    "app key": f"sw-{TAG}-app-key-0123456789",
    "wrong app key": f"sw-{TAG}-wrong-key-987654",
    "upstream key": f"upstream-{TAG}-secret-key",
    "reviewer token": f"reviewer-{TAG}-token-0123456789",
    "admin token": f"admin-{TAG}-token-0123456789ab",
    "UI password": f"pw-{TAG}-correct-horse",
    "wrong UI password": f"pw-{TAG}-wrong-horse",
    "message text": f"msg-{TAG}-text",
    "answer text": f"answer-{TAG}-text",
    "edited answer": f"edited-{TAG}-text",
    "report comment": f"comment-{TAG}-text",
    "report contact": f"contact-{TAG}@example.org",
    "image URL path": f"img-{TAG}.png",
    "webhook token": f"hook-{TAG}-token",
}
MODEL = "gpt-test"
THREAT = "I will find you and kill you, I know where you live."
HEALTH = "What is the maximum daily dose of ibuprofen for an adult?"


async def _upstream(request: Recorded) -> Response:
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]})
    text = str(request.body["messages"][-1]["content"])
    answer = f"Here you are: {MARKERS['answer text']}"
    if "please fail" in text:  # the upstream's error body repeats the request, as some do
        return json_reply({"error": {"message": f"cannot answer {text} ({answer})"}}, 500)
    if request.body.get("stream"):

        async def events() -> Any:
            for piece in (answer[:10], answer[10:]):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
                chunk["choices"] = [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]
                yield f"data: {__import__('json').dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    return json_reply(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }
    )


def _config(tmp: Path, upstream: StandIn) -> dict[str, Any]:
    return {
        "server": {"api_keys": [MARKERS["app key"]], "log_level": "debug"},
        "gateway": {
            "enabled": True,
            "upstream": {
                "base_url": f"{upstream.url}/v1",
                "api_key": MARKERS["upstream key"],
                "max_retries": 0,
                "total_timeout_s": 20,
            },
            "secret_file": str(tmp / "secret"),
            "audit_file": str(tmp / "audit.jsonl"),
            "tenant": "acme",
            "rate_limits": {"per_user": None},
        },
        "store": {"url": f"sqlite:///{tmp / 'seawall.db'}"},
        "images": {"allow_http": True},
        "review": {
            "enabled": True,
            "uncertain_low": None,
            "reviewer_tokens": {"rita": MARKERS["reviewer token"]},
            "admin_tokens": {"root": MARKERS["admin token"]},
            "notify": {"allowed_webhook_hosts": ["hooks.invalid"], "retries": 0, "timeout_s": 1},
        },
        "ui": {"secret_file": str(tmp / "ui-secret"), "login_attempts": 1000},
    }


def _prepare_store(config: dict[str, Any]) -> None:
    """The UI's tables and an account whose password is a marker."""
    from seawall.ui.accounts import AccountStore
    from seawall.ui.accounts import metadata as ui_metadata

    store = open_store(load_settings(store=config["store"]).store)
    try:
        ui_metadata.create_all(store.engine)
        AccountStore(store).create("alice", "admin", MARKERS["UI password"])
    finally:
        store.close()


def exercise(root: str) -> str:
    """Send the requests (checking each got the answer it should); ``GET /metrics`` at the end."""
    app = {"authorization": f"Bearer {MARKERS['app key']}"}
    reviewer = {"authorization": f"Bearer {MARKERS['reviewer token']}"}
    admin = {"authorization": f"Bearer {MARKERS['admin token']}"}
    text = MARKERS["message text"]
    user = MARKERS["user id"]

    def chat(content: str, **extra: Any) -> httpx.Response:
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "user": user, **extra}
        return http.post("/v1/chat/completions", json=body, headers=app)

    with httpx.Client(base_url=root, timeout=60) as http:
        moderated = http.post("/v1/moderations", json={"input": f"{THREAT} {text}"}, headers=app)
        assert moderated.status_code == 200 and moderated.json()["results"][0]["flagged"]
        wrong = {"authorization": f"Bearer {MARKERS['wrong app key']}"}
        assert http.post("/v1/moderations", json={"input": text}, headers=wrong).status_code == 401
        assert http.post("/v1/chat/completions", json={"model": MODEL}, headers=wrong).status_code == 401
        image = {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:9/{MARKERS['image URL path']}"}}
        assert http.post("/v1/moderations", json={"input": [image]}, headers=app).status_code == 400

        assert chat(f"What is the capital of France? {text}").status_code == 200
        assert chat(f"{THREAT} {text}").status_code == 400
        streamed = chat(f"Tell me about Paris. {text}", stream=True)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        assert chat(f"Tell me about Rome, please fail. {text}").status_code == 502
        session = {**app, "x-seawall-session": MARKERS["session id"]}
        anonymous = {"model": MODEL, "messages": [{"role": "user", "content": f"Hi there. {text}"}]}
        assert http.post("/v1/chat/completions", json=anonymous, headers=session).status_code == 200
        broken = f'{{"model": "{MODEL}", "messages": [{{"content": "{text}"'.encode()
        assert http.post("/v1/chat/completions", content=broken, headers=app).status_code == 400
        webhook = f"https://hooks.invalid/{MARKERS['webhook token']}?token={MARKERS['webhook token']}"
        held = chat(f"{HEALTH} {text}", seawall={"review": {"webhook": webhook}})
        assert held.status_code == 200, held.text  # the placeholder completion (the default)
        review_id = held.headers["x-seawall-review-id"]

        report = {
            "response_id": review_id,
            "category": "wrong",
            "comment": MARKERS["report comment"],
            "contact": MARKERS["report contact"],
            "user": user,
        }
        assert http.post("/v1/feedback", json=report, headers=app).status_code == 201
        assert http.post(f"/v1/seawall/reviews/{review_id}/claim", headers=reviewer).status_code == 200
        edit = {"text": MARKERS["edited answer"]}
        assert (
            http.post(f"/v1/seawall/reviews/{review_id}/edit", json=edit, headers=reviewer).status_code == 200
        )
        assert http.get(f"/v1/seawall/reviews/{review_id}", headers=app).json()["status"] == "edited"

        for password, status in ((MARKERS["wrong UI password"], 401), (MARKERS["UI password"], 303)):
            with httpx.Client(base_url=root, timeout=60) as browser:
                page = browser.get("/ui/login")
                from test_ui_support import csrf_from

                form = {"name": "alice", "password": password, "csrf_token": csrf_from(page.text)}
                assert browser.post("/ui/login", data=form).status_code == status
                if status == 303:
                    assert browser.get("/ui/audit").status_code == 200

        metrics = http.get("/metrics", headers=admin)
        assert metrics.status_code == 200
    return metrics.text


def leaks(where: str, text: str) -> list[str]:
    """Which markers ``text`` holds, each with a little context."""
    found = []
    for name, marker in MARKERS.items():
        at = text.find(marker)
        if at >= 0:
            found.append(f"{where}: {name} {marker!r} in ...{text[max(0, at - 120) : at + 60]!r}...")
    if not found and TAG in text:
        at = text.find(TAG)
        found.append(f"{where}: a piece of a marker in ...{text[max(0, at - 120) : at + 60]!r}...")
    return found


@dataclass
class Captured:
    logs: str
    metrics: str
    audit: str


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + f" args={record.args!r}")


@contextmanager
def everything_logged() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    level = root.level
    # Libraries imported by earlier tests may have quietened loggers (LiteLLM sets httpx to
    # WARNING): every logger speaks while this runs, as it would in an app configured to log all.
    others = [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in others]
    for logger in others:
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for logger, old_level, disabled in saved:
            logger.setLevel(old_level)
            logger.disabled = disabled


def test_nothing_secret_reaches_the_logs_of_the_app_in_process(tmp_path: Path) -> None:
    with stand_in(_upstream) as upstream:
        config = _config(tmp_path, upstream)
        _prepare_store(config)
        with everything_logged() as handler:
            with running_server(load_settings(**config)) as server:
                metrics = exercise(server.root)
            logs = "\n".join(handler.lines)
        sent = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
        assert sent and sent[0].headers["authorization"] == f"Bearer {MARKERS['upstream key']}"
    assert "seawall.gateway" in logs and "httpx" in logs  # the handler did see the app and its libraries
    captured = Captured(logs, metrics, (tmp_path / "audit.jsonl").read_text())
    _assert_clean(captured)


def test_nothing_secret_reaches_the_output_of_seawall_serve(tmp_path: Path) -> None:
    with stand_in(_upstream) as upstream:
        config = _config(tmp_path, upstream)
        _prepare_store(config)
        (tmp_path / "seawall.yaml").write_text(yaml.safe_dump(config))
        port_file = tmp_path / "port"
        env = subprocess_env()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).parent.parent / "src"), env.get("PYTHONPATH", "")]
        )
        output = tmp_path / "output.txt"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "seawall",
                    "serve",
                    "--config",
                    str(tmp_path / "seawall.yaml"),
                    "--port",
                    "0",
                    "--port-file",
                    str(port_file),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                port = served_port(port_file, process, lambda: output.read_text(errors="replace"))
                root = f"http://127.0.0.1:{port}"
                _wait_ready(root, process)
                metrics = exercise(root)
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
    logs = output.read_text(errors="replace")
    assert "GET /metrics" in logs and "POST /v1/chat/completions" in logs  # the access log was on
    _assert_clean(Captured(logs, metrics, (tmp_path / "audit.jsonl").read_text()))


def _wait_ready(root: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"seawall serve exited with {process.returncode} during start-up")
        try:
            if httpx.get(f"{root}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("seawall serve was not ready within 120 s")


def _assert_clean(captured: Captured) -> None:
    assert "seawall_review" in captured.metrics or "seawall" in captured.metrics
    assert captured.audit.count("\n") >= 8  # one record per gateway request
    found = (
        leaks("logs", captured.logs)
        + leaks("metrics", captured.metrics)
        + leaks("audit file", captured.audit)
    )
    assert not found, "\n".join(found)

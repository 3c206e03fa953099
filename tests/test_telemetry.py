"""OpenTelemetry traces of gateway requests, exported over OTLP/HTTP to a real loopback receiver
and decoded with the OTLP protobuf schema."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from backend_standins import stand_in
from conftest import running_server
from test_gateway_pipeline import (
    MODEL,
    QUESTION,
    THREAT,
    USER_ID,
    Behaviour,
    gateway_settings,
    make_reply,
    question,
)


class Collector:
    """An OTLP/HTTP traces endpoint on loopback that keeps every span it receives."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                collector.bodies.append(raw)
                request = ExportTraceServiceRequest.FromString(raw)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collector.spans.extend((resource, span) for span in scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.close()


def _attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in span.attributes:
        kind = item.value.WhichOneof("value")
        value = getattr(item.value, kind)
        values[item.key] = [v.string_value for v in value.values] if kind == "array_value" else value
    return values


def test_each_request_is_a_trace_with_a_span_per_step(tmp_path: Path, collector: Collector) -> None:
    with stand_in(make_reply(Behaviour())) as upstream:
        settings = gateway_settings(tmp_path, upstream.url)
        telemetry = settings.telemetry.model_copy(update={"traces": True, "otlp_endpoint": collector.url})
        settings = settings.model_copy(update={"telemetry": telemetry})
        with running_server(settings) as server, server.http() as http:
            body = {"model": MODEL, "messages": question(), "user": USER_ID}
            ok = http.post("/v1/chat/completions", json=body)
            refused = http.post(
                "/v1/chat/completions", json={"model": MODEL, "messages": question(THREAT), "user": USER_ID}
            )
            answered = http.post("/v1/responses", json={"model": MODEL, "input": QUESTION, "store": False})
        # leaving the server shuts the tracer down, which flushes every queued span
    assert ok.status_code == 200 and refused.status_code == 400 and answered.status_code == 200
    # The API a request came through: in the root span's name and its seawall.api attribute.
    [responses_root] = [span for _, span in collector.spans if span.name == "seawall.responses"]
    assert _attributes(responses_root)["seawall.api"] == "responses"
    assert _attributes(responses_root)["seawall.request_id"] == answered.headers["x-seawall-request-id"]
    resource = collector.spans[0][0]
    assert {"service.name"} <= {a.key for a in resource.resource.attributes}
    roots = {
        _attributes(span)["seawall.request_id"]: span
        for _, span in collector.spans
        if span.name == "seawall.chat_completions"
    }
    ok_id, refused_id = ok.headers["x-seawall-request-id"], refused.headers["x-seawall-request-id"]
    assert set(roots) == {ok_id, refused_id}
    ok_root, refused_root = roots[ok_id], roots[refused_id]
    assert _attributes(ok_root)["seawall.api"] == "chat.completions"
    assert _attributes(ok_root)["seawall.outcome"] == "ok" and _attributes(ok_root)["seawall.risk"] == "low"
    refused_attributes = _attributes(refused_root)
    assert refused_attributes["seawall.outcome"] == "refused_input"
    assert "violence" in refused_attributes["seawall.flagged_categories"]
    children = {span.name for _, span in collector.spans if span.parent_span_id == ok_root.span_id}
    assert {
        "seawall.identity",
        "seawall.rate_limits",  # standing: only with the risk ledger on
        "seawall.limits",
        "seawall.input_moderation",
        "seawall.upstream",
        "seawall.output_moderation",
    } <= children
    refused_children = {s.name for _, s in collector.spans if s.parent_span_id == refused_root.span_id}
    assert "seawall.upstream" not in refused_children  # refused before the model
    for _, span in collector.spans:  # no content and no raw user id in any span
        text = repr(_attributes(span))
        assert QUESTION not in text and USER_ID not in text and "kill" not in text


def test_traces_are_off_by_default(tmp_path: Path, collector: Collector) -> None:
    with stand_in(make_reply(Behaviour())) as upstream:
        settings = gateway_settings(tmp_path, upstream.url)
        assert settings.telemetry.traces is False
        with running_server(settings) as server, server.http() as http:
            response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": question()})
            assert response.status_code == 200
    assert collector.bodies == []

"""OpenTelemetry traces: one span per gateway request, a child span per pipeline step.

Spans carry the same figures as the audit record (request id, tenant, model, outcome, risk,
upstream status) and never message text or raw user ids. Off by default; with
``telemetry.traces`` on, :func:`start_tracing` installs a tracer provider that exports over
OTLP/HTTP in the background (a slow or absent collector never delays a request).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Status, StatusCode

from seawall.settings import TelemetrySettings

#: The instrumentation scope of seawall's spans.
TRACER_NAME = "seawall"


def start_tracing(settings: TelemetrySettings) -> TracerProvider | None:
    """A provider exporting to ``settings.otlp_endpoint`` (None when traces are off); the caller
    shuts it down (which flushes what is queued)."""
    if not settings.traces:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    return provider


class Tracer:
    """Spans for one app; without a provider every call is a cheap no-op."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None

    def start_request(self, name: str, **attributes: Any) -> Span | None:
        """The root span of one request; ended by :func:`finish_request_span` (via the audit log),
        so a stream's span lasts until its last event, whichever task sends it."""
        if self._tracer is None:
            return None
        return self._tracer.start_span(name, attributes=_clean(attributes))

    @contextmanager
    def step(self, parent: Span | None, name: str) -> Iterator[None]:
        """A child span of ``parent`` around one pipeline step."""
        if self._tracer is None or parent is None:
            yield
            return
        span = self._tracer.start_span(name, context=trace.set_span_in_context(parent))
        try:
            yield
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            span.end()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def finish_request_span(span: Span | None, record: dict[str, Any]) -> None:
    """Copy an audit record's outcome figures onto the request's span and end it."""
    if span is None:
        return
    span.set_attributes(
        _clean(
            {
                "seawall.request_id": record.get("request_id"),
                "seawall.tenant": record.get("tenant"),
                "seawall.api": record.get("api"),
                "seawall.model": record.get("model"),
                "seawall.stream": record.get("stream"),
                "seawall.outcome": record.get("outcome"),
                "seawall.risk": record.get("risk"),
                "seawall.flagged_categories": sorted(
                    {name for d in record.get("decisions", []) for name in d.get("categories", [])}
                ),
                "seawall.upstream_status": str((record.get("upstream") or {}).get("status", "")),
            }
        )
    )
    error = record.get("error")
    if error and int(error.get("status", 0)) >= 500:
        span.set_status(Status(StatusCode.ERROR, str(error.get("code"))))
    span.end()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attribute values: no None, sequences of strings."""
    clean: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        clean[key] = [str(v) for v in value] if isinstance(value, list | tuple | set) else value
    return clean


__all__ = ["TRACER_NAME", "Tracer", "finish_request_span", "start_tracing"]

"""Prometheus metrics for ``GET /metrics`` (prometheus-client), one registry per app.

Counted in this process (each replica exports its own; sum them in Prometheus):

* ``seawall_gateway_requests_total{outcome}`` — gateway requests by audit outcome;
* ``seawall_gateway_flags_total{step,category}`` — categories flagged by input/output moderation;
* ``seawall_gateway_risk_total{level}`` — requests by risk level;
* ``seawall_gateway_blocks_total{reason}`` — requests refused or stopped (refused_input,
  filtered_output, blocked_stream, user_blocked, rate_limited, guard_failed);
* ``seawall_gateway_shadow_total{step,would}`` — what controls in shadow mode (``gateway.modes``)
  would have done: refuse, filter, block, drop, hold, ... (the audit record's ``shadow`` list);
* ``seawall_review_held_total{reason}`` — answers held, by the first reason (domain / uncertain / ...);
* ``seawall_review_holds_total{mode}`` — held answers by what the client got (``review.hold_response``
  or the request's header: placeholder, accepted, wait);
* ``seawall_review_waits_total{outcome}`` — how waits for a decision (wait mode) ended: ``decided``
  (approved, edited or rejected in time), ``timeout`` (the placeholder) or ``disconnected`` (the
  client hung up; the item stays in the queue);
* ``seawall_review_waiting`` — requests waiting for a decision in this process now (a gauge);
* ``seawall_review_decisions_total{decision}`` and ``seawall_review_time_to_decision_seconds``
  (histogram: from hold to decision);
* ``seawall_reports_total{category}`` — user reports received;
* ``seawall_gateway_step_seconds{step}`` — latency of each step of the request path (histogram,
  from the audit record's ``latency_ms``: identity, moderation, upstream, ... and ``total``);
* ``seawall_gateway_upstream_errors_total{status,code}`` — upstream failures by the HTTP status
  the client got and the error code (upstream_timeout, upstream_unreachable, ...);
* ``seawall_gateway_guard_failures_total{step,action}`` — guards that could not judge
  (``failed_closed``, ``failed_open``) or crashed (``error``);
* the standard ``process_*`` metrics (CPU, memory, open files; prometheus-client's collector).

Read from the store at scrape time (shared by every replica, so every replica says the same):

* ``seawall_review_items{status}`` — review items by status (``pending`` is the queue depth);
* ``seawall_reports{status}`` — user reports by status;
* ``seawall_gateway_requests_24h{outcome}`` — gateway requests of the last 24 hours by outcome,
  from the audit records (right after a restart too; read at most once a minute).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from seawall.clock import utc_now
from seawall.store.base import AuditOutcome, ReviewStore

log = logging.getLogger("seawall.review.metrics")

#: Audit outcomes that mean the request was refused or its answer stopped.
BLOCK_OUTCOMES: frozenset[AuditOutcome] = frozenset(
    {"refused_input", "filtered_output", "blocked_stream", "user_blocked", "rate_limited", "guard_failed"}
)
#: Audit steps whose decisions carry moderation categories and scores (the gateway's guards).
GUARD_STEPS = frozenset({"input_moderation", "output_moderation", "tool_call_moderation"})
#: Time-to-decision buckets (seconds): a minute to a day.
DECISION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
#: Step latency buckets (seconds): a millisecond to two minutes.
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Decision actions of a guard that could not judge, or crashed.
GUARD_FAILURES = frozenset({"failed_closed", "failed_open", "error"})
#: ``seawall_review_waits_total`` outcomes of the audit record's ``review_wait`` actions that are not
#: a decision (approved, edited, rejected: ``decided``).
WAIT_OUTCOMES = {"timeout": "timeout", "client_disconnected": "disconnected"}
#: Seconds the last-24-hours request counts are reused between scrapes.
AUDIT_COUNTS_TTL_S = 60.0


class _StoreCounts(Collector):
    """Review items and reports per status, read from the store at each scrape."""

    def __init__(self, store: ReviewStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._audit: tuple[float, dict[str, int]] | None = None

    def _requests_24h(self) -> dict[str, int] | None:
        """Requests of the last 24 hours by outcome (cached), or None for a store without audit."""
        counts = getattr(self.store, "audit_counts", None)
        if counts is None:
            return None
        with self._lock:
            if self._audit is not None and self._audit[0] > time.monotonic():
                return self._audit[1]
        now = utc_now()
        rows, _ = counts(now - timedelta(days=1), now, 86_400 * 2)
        found: dict[str, int] = {}
        for _, outcome, _, count in rows:
            found[str(outcome)] = found.get(str(outcome), 0) + int(count)
        with self._lock:
            self._audit = (time.monotonic() + AUDIT_COUNTS_TTL_S, found)
        return found

    def collect(self) -> Iterator[Metric]:
        try:
            items = self.store.review_counts()
            reports = self.store.report_counts()
            requests = self._requests_24h()
        except Exception as exc:  # a scrape must not fail because the store is down
            log.warning("cannot read review counts for /metrics: %s", exc)
            return
        if requests is not None:
            gauge = GaugeMetricFamily(
                "seawall_gateway_requests_24h",
                "Gateway requests of the last 24 hours by outcome (from the audit records).",
                labels=["outcome"],
            )
            for outcome, count in sorted(requests.items()):
                gauge.add_metric([outcome], count)
            yield gauge
        gauge = GaugeMetricFamily("seawall_review_items", "Review items by status.", labels=["status"])
        for status, count in items.items():
            gauge.add_metric([status], count)
        yield gauge
        gauge = GaugeMetricFamily("seawall_reports", "User reports by status.", labels=["status"])
        for status, count in reports.items():
            gauge.add_metric([status], count)
        yield gauge


class ReviewMetrics:
    """The metrics of one app; ``observe_request`` takes each gateway audit record."""

    def __init__(self, store: ReviewStore | None = None, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "seawall_gateway_requests", "Gateway requests by outcome.", ["outcome"], registry=self.registry
        )
        self.flags = Counter(
            "seawall_gateway_flags",
            "Moderation categories flagged, by step.",
            ["step", "category"],
            registry=self.registry,
        )
        self.risk = Counter(
            "seawall_gateway_risk", "Requests by risk level.", ["level"], registry=self.registry
        )
        self.blocks = Counter(
            "seawall_gateway_blocks",
            "Requests refused or stopped, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "seawall_gateway_shadow",
            "What controls in shadow mode would have done, by step and would-be action.",
            ["step", "would"],
            registry=self.registry,
        )
        self.held = Counter(
            "seawall_review_held", "Answers held for review, by reason.", ["reason"], registry=self.registry
        )
        self.holds = Counter(
            "seawall_review_holds",
            "Held answers by what the client got (placeholder, accepted, wait).",
            ["mode"],
            registry=self.registry,
        )
        self.waits = Counter(
            "seawall_review_waits",
            "Waits for a reviewer's decision (wait mode) by how they ended: decided, timeout, disconnected.",
            ["outcome"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "seawall_review_waiting",
            "Requests waiting for a reviewer's decision in this process now (wait mode).",
            registry=self.registry,
        )
        self.decisions = Counter(
            "seawall_review_decisions", "Review decisions.", ["decision"], registry=self.registry
        )
        self.time_to_decision = Histogram(
            "seawall_review_time_to_decision_seconds",
            "Seconds from holding an answer to its decision.",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.reports = Counter(
            "seawall_reports_received",
            "User reports received, by category.",
            ["category"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "seawall_gateway_step_seconds",
            "Latency of each step of the gateway's request path.",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "seawall_gateway_upstream_errors",
            "Upstream failures by the status the client got and the error code.",
            ["status", "code"],
            registry=self.registry,
        )
        self.guard_failures = Counter(
            "seawall_gateway_guard_failures",
            "Guards that could not judge (failed_closed, failed_open) or crashed (error), by step.",
            ["step", "action"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        if store is not None:
            self.registry.register(_StoreCounts(store))
        #: The labelled children :meth:`observe_request` used, by metric and label values: a request
        #: observes about ten, and ``labels()`` validates and locks on every call.
        self._children: dict[tuple[int, str], Any] = {}

    def _child(self, metric: Counter | Histogram, value: str) -> Any:
        """``metric.labels(value)``, kept for the next request."""
        key = (id(metric), value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(value)
        return child

    def observe_request(self, record: Mapping[str, Any]) -> None:
        """Count one gateway request from its audit record (:meth:`AuditRecord.to_dict`)."""
        outcome = str(record.get("outcome") or "unknown")
        self._child(self.requests, outcome).inc()
        if outcome in BLOCK_OUTCOMES:
            self._child(self.blocks, outcome).inc()
        risk = record.get("risk")
        if risk:
            self._child(self.risk, str(risk)).inc()
        for decision in record.get("decisions") or []:
            if decision.get("step") in GUARD_STEPS:
                for category in decision.get("categories") or []:
                    self.flags.labels(decision["step"], str(category)).inc()
        for entry in record.get("shadow") or []:
            self.shadow.labels(str(entry.get("step")), str(entry.get("would"))).inc()
        for step, milliseconds in (record.get("latency_ms") or {}).items():
            if isinstance(milliseconds, int | float):
                self._child(self.step_seconds, str(step)).observe(float(milliseconds) / 1000)
        if outcome == "upstream_error":
            error = record.get("error") or {}
            self.upstream_errors.labels(str(error.get("status")), str(error.get("code"))).inc()
        for decision in record.get("decisions") or []:
            if decision.get("action") in GUARD_FAILURES:
                self.guard_failures.labels(str(decision.get("step")), str(decision["action"])).inc()
            if decision.get("step") == "review" and decision.get("response"):  # shadow holds have none
                self.holds.labels(str(decision["response"])).inc()
            elif decision.get("step") == "review_wait":
                self.waits.labels(WAIT_OUTCOMES.get(str(decision.get("action")), "decided")).inc()

    def count_waiting(self, waiting: Callable[[], int]) -> None:
        """Read ``seawall_review_waiting`` from ``waiting`` at each scrape."""
        self.waiting.set_function(lambda: float(waiting()))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


__all__ = ["BLOCK_OUTCOMES", "ReviewMetrics"]

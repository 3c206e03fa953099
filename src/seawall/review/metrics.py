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
* ``seawall_review_decisions_total{decision}`` and ``seawall_review_time_to_decision_seconds``
  (histogram: from hold to decision);
* ``seawall_reports_total{category}`` — user reports received.

Read from the store at scrape time (shared by every replica, so every replica says the same):

* ``seawall_review_items{status}`` — review items by status (``pending`` is the queue depth);
* ``seawall_reports{status}`` — user reports by status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class _StoreCounts(Collector):
    """Review items and reports per status, read from the store at each scrape."""

    def __init__(self, store: ReviewStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            items = self.store.review_counts()
            reports = self.store.report_counts()
        except Exception as exc:  # a scrape must not fail because the store is down
            log.warning("cannot read review counts for /metrics: %s", exc)
            return
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
        if store is not None:
            self.registry.register(_StoreCounts(store))

    def observe_request(self, record: Mapping[str, Any]) -> None:
        """Count one gateway request from its audit record (:meth:`AuditRecord.to_dict`)."""
        outcome = str(record.get("outcome") or "unknown")
        self.requests.labels(outcome).inc()
        if outcome in BLOCK_OUTCOMES:
            self.blocks.labels(outcome).inc()
        risk = record.get("risk")
        if risk:
            self.risk.labels(str(risk)).inc()
        for decision in record.get("decisions") or []:
            if decision.get("step") in GUARD_STEPS:
                for category in decision.get("categories") or []:
                    self.flags.labels(decision["step"], str(category)).inc()
        for entry in record.get("shadow") or []:
            self.shadow.labels(str(entry.get("step")), str(entry.get("would"))).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


__all__ = ["BLOCK_OUTCOMES", "ReviewMetrics"]

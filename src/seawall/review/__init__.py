"""Human review of held answers, user reports, notifications, AI notices and metrics.

The gateway holds answers in high-risk domains (health, finance, law, code; declared by the app
or detected offline by :class:`DomainDetector`) or with uncertain moderation scores; the client
gets a placeholder completion, the 202 ``pending_review`` body, or the decision if it comes in time
(``review.hold_response``; :mod:`seawall.review.responses`); reviewers claim, approve, edit or reject them
(:class:`ReviewService`, routes in :func:`add_review_routes`). Users report answers
(``POST /v1/feedback``) into a triage queue. Webhooks and e-mail tell people (:class:`Notifier`);
``/metrics`` counts it all (:class:`ReviewMetrics`). The pipeline calls :class:`ReviewHook`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seawall.errors import ConflictError
    from seawall.review.domains import DomainDetector, DomainVerdict
    from seawall.review.gateway_hook import PENDING_STATUS, ReviewHook
    from seawall.review.metrics import ReviewMetrics
    from seawall.review.notify import Notifier, check_webhook_url
    from seawall.review.routes import add_review_routes
    from seawall.review.service import (
        HoldDecision,
        ReviewRequest,
        ReviewService,
        final_completion,
    )
    from seawall.review.settings import ReviewSettings

# Loaded on first use: seawall.settings imports seawall.review.settings, which must stay light.
_LAZY = {
    "DomainDetector": "seawall.review.domains",
    "DomainVerdict": "seawall.review.domains",
    "PENDING_STATUS": "seawall.review.gateway_hook",
    "ReviewHook": "seawall.review.gateway_hook",
    "ReviewMetrics": "seawall.review.metrics",
    "Notifier": "seawall.review.notify",
    "check_webhook_url": "seawall.review.notify",
    "add_review_routes": "seawall.review.routes",
    "ConflictError": "seawall.errors",
    "HoldDecision": "seawall.review.service",
    "ReviewRequest": "seawall.review.service",
    "ReviewService": "seawall.review.service",
    "final_completion": "seawall.review.service",
    "ReviewSettings": "seawall.review.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "PENDING_STATUS",
    "ConflictError",
    "DomainDetector",
    "DomainVerdict",
    "HoldDecision",
    "Notifier",
    "ReviewHook",
    "ReviewMetrics",
    "ReviewRequest",
    "ReviewService",
    "ReviewSettings",
    "add_review_routes",
    "check_webhook_url",
    "final_completion",
]

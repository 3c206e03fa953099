"""Settings of human review, user reports, notifications, notices and metrics (``review:``).

One pydantic model, :class:`ReviewSettings`, meant to sit in the main settings as ``review``
(``SEAWALL_REVIEW__...`` in the environment); tests and library users build it directly.
This module imports nothing from :mod:`seawall.settings`, so that module can import it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from seawall.categories import ALL_LABELS

#: The high-risk domains seawall knows how to detect.
Domain = Literal["health", "finance", "law", "code"]
DOMAINS: tuple[Domain, ...] = ("health", "finance", "law", "code")
#: Whose moderation scores a hold rule looks at: the user's request, the model's draft, or either.
ScoreSource = Literal["request", "draft", "either"]


class HoldRule(BaseModel):
    """One reason to hold an answer for a person. Every condition the rule states must hold (an
    unstated one matches anything); the answer is held when any rule matches, and the review item
    records which rules matched and why.

    A rule states a domain condition (``domains``), a score condition (``band`` or ``flagged``), or
    both (then both must hold: "uncertain harassment in health questions"); ``tiers`` and
    ``categories`` narrow it further.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=80, description="Shown to reviewers as why the answer was held."
    )
    domains: list[Domain] | None = Field(
        None,
        description="The request's domain (declared by the app in seawall.review.domain, or detected) must "
        "be one of these. None: any request, in a domain or not.",
    )
    band: tuple[float, float | None] | None = Field(
        None,
        description="[low, high): a score of one of 'categories' (from 'scores') at or above low and below "
        "high, in a category that was not flagged; high null: up to the flag threshold. None: no band.",
    )
    flagged: bool = Field(
        False,
        description="A category of 'categories' was flagged with the 'flag' action (let through for a "
        "person to see).",
    )
    categories: list[str] | None = Field(
        None, description="The categories whose scores the band or flag looks at. None: every category."
    )
    scores: ScoreSource = Field(
        "either", description="Whose scores count: the request's, the draft answer's, or either."
    )
    tiers: list[str] | None = Field(
        None,
        description="User tiers (the names of the policy's tiers) the rule applies to. None: every "
        "request, with a tier or without.",
    )

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            unknown = sorted(set(value) - set(ALL_LABELS))
            if unknown:
                raise ValueError(f"unknown categories {unknown}; known: {', '.join(ALL_LABELS)}")
        return value

    @model_validator(mode="after")
    def _meaningful(self) -> HoldRule:
        if self.domains is None and self.band is None and not self.flagged:
            raise ValueError(
                f"hold rule {self.name!r} states no condition: give 'domains', 'band' or 'flagged' "
                "(it would hold every answer)"
            )
        if self.band is not None and self.flagged:
            raise ValueError(f"hold rule {self.name!r}: 'band' and 'flagged' are separate rules")
        if self.band is not None:
            low, high = self.band
            if not 0 <= low <= 1 or (high is not None and not low < high <= 1):
                raise ValueError(
                    f"hold rule {self.name!r}: band must be [low, high) with 0 <= low < high <= 1"
                )
        if self.categories is not None and self.band is None and not self.flagged:
            raise ValueError(f"hold rule {self.name!r}: 'categories' goes with 'band' or 'flagged'")
        if self.domains == [] or self.tiers == [] or self.categories == []:
            raise ValueError(
                f"hold rule {self.name!r}: an empty list matches nothing; leave it out for 'any'"
            )
        return self


def default_rules() -> list[HoldRule]:
    """The hold rules when neither ``review.rules`` nor the older ``review.domains`` and
    ``review.uncertain_low`` are set: health, finance and law questions (not code: coding questions
    are most of an ordinary app's traffic and rarely need a person), anything flagged with the 'flag'
    action, a request scored in [0.3, flag) and a draft answer in [0.5, flag) (benign answers about
    books, history and processes often score 0.3-0.5; ``bench/hold_rate.py`` measures both)."""
    return [
        HoldRule(name="high-risk domain", domains=["health", "finance", "law"]),
        HoldRule(name="flagged for a person", flagged=True),
        HoldRule(name="uncertain request", band=(0.3, None), scores="request"),
        HoldRule(name="uncertain answer", band=(0.5, None), scores="draft"),
    ]


def legacy_rules(
    domains: list[Domain], uncertain_low: float | None, *, flagged: bool = True
) -> list[HoldRule]:
    """The rules ``review.domains`` and ``review.uncertain_low`` stand for when ``review.rules`` is
    not given: the listed domains, anything flagged with the 'flag' action, and the uncertain band."""
    rules: list[HoldRule] = []
    if domains:
        rules.append(HoldRule(name="high-risk domain", domains=list(domains)))
    if flagged:
        rules.append(HoldRule(name="flagged for a person", flagged=True))
    if uncertain_low is not None:
        rules.append(HoldRule(name="uncertain score", band=(uncertain_low, None)))
    return rules


class Notice(BaseModel):
    """One stated limitation of the AI (shown by the widget, summarised in a header)."""

    id: str = Field(description="Short stable id, e.g. 'hallucination'.")
    title: str = Field(description="A heading for the widget.")
    text: str = Field(description="One or two sentences for users.")


def _default_limitations() -> list[Notice]:
    return [
        Notice(
            id="hallucination",
            title="Answers can be wrong",
            text="The assistant can state false or made-up facts with confidence. Check important "
            "information against a reliable source.",
        ),
        Notice(
            id="bias",
            title="Answers can be biased",
            text="The model learned from human-written text and can repeat its biases and stereotypes.",
        ),
        Notice(
            id="not_professional_advice",
            title="Not professional advice",
            text="Answers are not medical, legal, financial or other professional advice. Consult a "
            "qualified professional for decisions that matter.",
        ),
    ]


class NoticeSettings(BaseModel):
    """The AI disclosure and the limitations, as headers on gateway responses and ``/v1/seawall/notices``."""

    enabled: bool = Field(True, description="Add the notice headers to every gateway response.")
    disclosure: str = Field(
        "You are talking to an AI assistant; answers are generated automatically.",
        description="The AI disclosure (header x-seawall-disclosure; ASCII only, one line).",
    )
    limitations: list[Notice] = Field(
        default_factory=_default_limitations, description="Stated limitations, in display order."
    )

    @field_validator("disclosure")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        if not value.isascii() or "\n" in value or "\r" in value:
            raise ValueError("the disclosure goes into an HTTP header: ASCII on one line")
        return value.strip()


class SmtpSettings(BaseModel):
    """E-mail notifications through an SMTP server (the standard library's smtplib)."""

    host: str = Field(description="SMTP server host.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port (587 submission, 465 implicit TLS).")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (STARTTLS required), tls (implicit TLS) or none (loopback only)."
    )
    username: str | None = Field(None, description="Login name, if the server wants one.")
    password: SecretStr | None = Field(None, description="Login password.")
    sender: str = Field("seawall@localhost", description="From address.")
    recipients: list[str] = Field(min_length=1, description="Who gets the notifications.")
    timeout_s: float = Field(10.0, gt=0, description="Connection and command timeout.")


#: What a client gets for a held answer: an ordinary completion whose message says a person is
#: checking the answer (placeholder), the 202 pending-review protocol (accepted), or the reviewer's
#: decision if one comes within ``wait_s`` (wait; else the placeholder).
HoldResponse = Literal["placeholder", "accepted", "wait"]
HOLD_RESPONSES: tuple[HoldResponse, ...] = ("placeholder", "accepted", "wait")

#: Events seawall notifies about.
Event = Literal["review.held", "review.decided", "report.created"]
_DEFAULT_EVENTS: tuple[Event, ...] = ("review.held", "report.created")


class NotifySettings(BaseModel):
    """Where seawall tells people about held answers and new user reports."""

    webhook_url: str | None = Field(
        None, description="Operator webhook POSTed a JSON event for each held answer and each new report."
    )
    smtp: SmtpSettings | None = Field(None, description="E-mail the same events; None: no e-mail.")
    on: list[Event] = Field(
        default_factory=lambda: list(_DEFAULT_EVENTS),
        description="Events sent to the operator webhook and e-mail (per-request webhooks get "
        "review.decided only).",
    )
    retries: int = Field(3, ge=0, le=10, description="Retries after a failed delivery.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubled for each retry.")
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook delivery.")
    allowed_webhook_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (exact, or '*.example.com') a request's own review webhook may point at. "
        "Empty: per-request webhooks are refused.",
    )
    allow_http_webhooks: bool = Field(
        False, description="Accept http:// per-request webhooks (https only by default)."
    )
    allow_private_webhooks: bool = Field(
        False,
        description="Let per-request webhooks reach loopback, private, link-local and other non-public "
        "addresses (a receiver inside your own network). Off: every address the webhook's host is or "
        "resolves to must be public, checked at each delivery and pinned for its connection.",
    )
    signing_secret: SecretStr | None = Field(
        None,
        description="Sign webhook bodies: header x-seawall-signature = 'sha256=' + HMAC-SHA256 hex of "
        "the body.",
    )


class FeedbackLimit(BaseModel):
    """Rate limit of user reports per user."""

    requests: int = Field(10, ge=1, description="Reports allowed per window and user.")
    window_s: int = Field(3600, ge=1, le=86_400 * 7, description="Window length in seconds.")


class ReviewSettings(BaseModel):
    """Human review of held answers, user reports, notifications, notices and metrics."""

    enabled: bool = Field(
        False,
        description="Hold qualifying answers for human review (off by default: holding changes what "
        "clients get, see hold_response, and needs reviewers). Reports, notices and metrics work "
        "either way.",
    )
    hold_response: HoldResponse = Field(
        "placeholder",
        description="What the client gets for a held answer. placeholder: an ordinary chat completion "
        "(or stream) whose message is placeholder_message, finish_reason 'stop', with the review's id, "
        "status and poll_url in its 'seawall' field and the x-seawall-review-* headers, so an app using "
        "the OpenAI SDK unchanged keeps working. accepted: HTTP 202 with the pending-review body "
        "(choices: [], review_id, poll_url; JSON for streams too). wait: the request waits up to wait_s "
        "for a reviewer's decision and gets the approved (or edited) answer, the rejection, or else the "
        "placeholder. A request may choose with the x-seawall-review header.",
    )
    wait_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="In wait mode, how long a held request waits for a reviewer's decision before it "
        "gets the placeholder. Keep it below the client's and any proxy's timeouts.",
    )
    wait_poll_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="In wait mode, how often the store is asked for a decision made by another replica "
        "(a decision made in this process ends the wait at once).",
    )
    wait_keepalive_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description="In wait mode, a stream gets its role chunk at once and then an SSE comment "
        "(': waiting for review') every this many seconds until the decision (or the placeholder) comes, "
        "so proxies and clients with read timeouts keep the connection open. Keep it below their idle "
        "timeouts.",
    )
    placeholder_message: str = Field(
        "A person is checking this answer before it is shared. Please check back in a little while.",
        min_length=1,
        description="The message of the placeholder completion of a held answer, shown to end users.",
    )
    rejected_message: str = Field(
        "This answer was withheld after a review by a person.",
        min_length=1,
        description="The message a rejected answer is replaced with in wait mode, and in a kept Responses "
        "API response retrieved (or continued) after the rejection (finish_reason 'content_filter', an "
        "incomplete Response; the reviewer's reason is in the 'seawall' field, for the app).",
    )
    domains: list[Domain] = Field(
        default_factory=lambda: list(DOMAINS),
        description="High-risk domains whose answers are held (health, finance, law, code). Older form of "
        "'rules': used only when 'rules' is not set and this or 'uncertain_low' is.",
    )
    detect_domains: bool = Field(
        True,
        description="Detect the domain of each request offline; off: only domains the app declares "
        "(seawall.review.domain) are held.",
    )
    domain_threshold: float | None = Field(
        None, ge=0, le=1, description="Detector score a domain needs; None: the detector's measured default."
    )
    uncertain_low: float | None = Field(
        0.3,
        ge=0,
        le=1,
        description="Hold answers whose request or answer has any moderation score at or above this "
        "but below the flag threshold (the uncertain band). None: no band. Older form of 'rules': used "
        "only when 'rules' is not set and this or 'domains' is.",
    )
    rules: list[HoldRule] | None = Field(
        None,
        description="The hold rules, in order (see HoldRule: domains, a score band or a flag, whose "
        "scores, which categories, which user tiers). None: when 'domains' or 'uncertain_low' is set, the "
        "rules they stand for (those domains; anything flagged with the 'flag' action; the band "
        "[uncertain_low, flag) on request and answer alike); else the default rules (health, finance and "
        "law; anything flagged; a request in [0.3, flag); an answer in [0.5, flag)). []: nothing is held.",
    )
    scan_keys: list[str] = Field(
        default_factory=list,
        description="API key ids (key_..., as 'seawall keys list' shows) whose traffic is a red-team "
        "scan: its answers are held only when the request asks with the header "
        "'x-seawall-scan-review: hold', so a scan does not flood the queue.",
    )
    claim_ttl_s: int = Field(900, ge=10, le=86_400, description="How long a reviewer's claim lasts.")
    reviewer_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Reviewer name -> bearer token for the review queue and the report triage.",
    )
    admin_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Admin name -> bearer token: everything a reviewer may do, plus /metrics.",
    )
    metrics_public: bool = Field(False, description="Serve /metrics without a token.")
    widget_origins: list[str] = Field(
        default_factory=list,
        description="Origins (e.g. https://app.example.org) of the pages that embed the report widget "
        "(/ui/widget.js): they may call POST /v1/feedback and GET /v1/seawall/notices from the browser "
        "(CORS). '*' allows any origin. Empty: no cross-origin calls.",
    )
    max_sources_chars: int = Field(
        200_000, ge=0, description="Most characters of source material and notes a request may attach."
    )
    pending_message: str = Field(
        "This answer is being checked by a person before it is shared. Poll poll_url for the result.",
        description="The message of the pending-review (202) body (hold_response accepted).",
    )
    feedback_limit: FeedbackLimit = Field(
        default_factory=FeedbackLimit, description="User reports allowed per user."
    )
    max_comment_chars: int = Field(4000, ge=1, description="Longest report comment.")
    notify: NotifySettings = Field(default_factory=NotifySettings, description="Notifications.")
    notices: NoticeSettings = Field(default_factory=NoticeSettings, description="AI disclosure and limits.")

    def hold_rules(self) -> list[HoldRule]:
        """The rules in force: ``rules``; else those ``domains``/``uncertain_low`` stand for when either
        is set; else :func:`default_rules`."""
        if self.rules is not None:
            return list(self.rules)
        if {"domains", "uncertain_low"} & self.model_fields_set:
            return legacy_rules(self.domains, self.uncertain_low)
        return default_rules()

    @field_validator("widget_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        cleaned: list[str] = []
        for origin in value:
            origin = origin.strip().rstrip("/")
            scheme, sep, host = origin.partition("://")
            if origin != "*" and (scheme not in ("http", "https") or not sep or not host or "/" in host):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], or '*'")
            cleaned.append(origin)
        return cleaned

    @model_validator(mode="after")
    def _distinct_tokens(self) -> ReviewSettings:
        tokens = [t.get_secret_value() for t in [*self.reviewer_tokens.values(), *self.admin_tokens.values()]]
        if len(tokens) != len(set(tokens)):
            raise ValueError("every reviewer and admin needs a token of their own")
        if any(len(token) < 16 for token in tokens):
            raise ValueError("reviewer and admin tokens must be at least 16 characters long")
        return self


__all__ = [
    "DOMAINS",
    "HOLD_RESPONSES",
    "Domain",
    "FeedbackLimit",
    "HoldResponse",
    "HoldRule",
    "Notice",
    "NoticeSettings",
    "NotifySettings",
    "ReviewSettings",
    "ScoreSource",
    "SmtpSettings",
    "default_rules",
    "legacy_rules",
]

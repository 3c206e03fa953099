"""Trust tiers: what a user may do, by what the app's identity provider vouches for.

A policy's ``tiers`` (see ``examples/policy.yaml``) is a list checked top to bottom; a request
gets the first tier that matches it:

* ``verified: true`` (the default) matches only a user whose token the gateway verified
  (:mod:`seawall.gateway.user_tokens`), and only when every entry of ``claims`` holds: the
  token's claim equals the value, or one of the values of a list (a claim that is itself a list,
  such as ``roles`` or ``groups``, matches when it contains one of them). Values compare by JSON
  type as well as value (``true`` is not ``1``, ``"true"`` is not ``true``). A claim name is looked
  up as it is (``https://example.com/claims/plan`` is one name); a name with dots that is not a
  claim is followed into nested objects (``realm_access.roles``).
* ``verified: false`` matches every request, verified or not: the tier of unverified users
  (an anonymous session, the ``user`` field, a trusted header), and the catch-all. The last tier
  must be one, so every request has a tier.

Each tier may set, for its users, what the gateway otherwise takes from the policy and the
settings: the per-user rate limit (``rate_limit``, instead of ``gateway.rate_limits.per_user``),
the request limits (``limits``: any of the policy's ``limits`` keys, e.g. ``max_output_tokens``,
``max_input_tokens``, ``allowed_models``; keys left out keep the policy's value, a key set to
null switches that limit off) and the escalation (``risk``: the thresholds ``warn_at``,
``throttle_at``, ``block_at``, ``review_at`` in risk points, ``throttle``, the rate a throttled
user may send at, and ``medium_score``, the moderation score that makes a request medium risk;
left out: ``gateway.risk``'s).

The tier a request got is in its audit record (``tier``) and on the dashboard's users page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seawall.gateway.limits import EnumValue, InputLimits, same_json_value
from seawall.settings import RateLimit, RiskSettings

_TIER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

ClaimValue = EnumValue | list[EnumValue]


class TierRisk(BaseModel):
    """A tier's escalation thresholds, in risk points (left out: ``gateway.risk``'s; null skips a
    rung), the rate its throttled users may send at, and the score that makes a request medium."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    medium_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="A moderation score at or above this (unflagged) makes a request of the tier medium.",
    )
    throttle: RateLimit | None = Field(
        None, description="The rate a throttled user of the tier may send requests at."
    )
    warn_at: float | None = Field(None, gt=0, description="Points at which a user of the tier is warned.")
    throttle_at: float | None = Field(
        None, gt=0, description="Points at which a user of the tier is throttled."
    )
    block_at: float | None = Field(None, gt=0, description="Points at which a user of the tier is blocked.")
    review_at: float | None = Field(
        None, gt=0, description="Points at which a user of the tier is blocked until an admin clears them."
    )


class Tier(BaseModel):
    """One trust tier of the policy: who is in it, and what they may do."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(description="The tier's name (letters, digits, '_', '-', '.'), as the audit shows it.")
    verified: bool = Field(
        True,
        description=(
            "true: only users with a verified token (and the claims below); false: every request "
            "(the tier of unverified users, and the catch-all)."
        ),
    )
    claims: dict[str, ClaimValue] = Field(
        default_factory=dict,
        description=(
            "Claims the verified token must carry, each with the value (or one of the values) it must "
            "have, e.g. {email_verified: true} or {plan: [pro, team]}. Empty: any verified user."
        ),
    )
    rate_limit: RateLimit | None = Field(
        None,
        description=(
            "Requests per window for each user of the tier; left out: gateway.rate_limits.per_user; "
            "null: no per-user limit."
        ),
    )
    limits: InputLimits | None = Field(
        None,
        description=(
            "The tier's request limits: any keys of the policy's limits (max_output_tokens, "
            "max_input_tokens, max_input_chars, max_messages, allowed_models, enumerated_fields); "
            "keys left out keep the policy's value."
        ),
    )
    risk: TierRisk | None = Field(
        None,
        description=(
            "The tier's escalation thresholds, throttle rate and medium_score; left out: gateway.risk's."
        ),
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _TIER_NAME.fullmatch(value):
            raise ValueError("a tier name is 1 to 64 letters, digits, '_', '-' or '.'")
        return value

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: dict[str, ClaimValue]) -> dict[str, ClaimValue]:
        for name, wanted in value.items():
            if not name:
                raise ValueError("a claim name must not be empty")
            if isinstance(wanted, list) and not wanted:
                raise ValueError(f"claim {name!r}: give at least one value")
        return value

    @model_validator(mode="after")
    def _claims_need_a_token(self) -> Tier:
        if self.claims and not self.verified:
            raise ValueError(
                f"tier {self.name!r}: claims can only be checked on a verified token (verified: true)"
            )
        return self

    def matches(self, claims: Mapping[str, Any] | None) -> bool:
        """Whether a request with these verified ``claims`` (None: no verified token) is in the tier."""
        if not self.verified:
            return True
        if claims is None:
            return False
        return all(claim_matches(claim_value(claims, name), wanted) for name, wanted in self.claims.items())


def check_tiers(tiers: Sequence[Tier]) -> None:
    """Raise ``ValueError`` unless the names are unique and the last tier matches every request."""
    if not tiers:
        return
    names = [tier.name for tier in tiers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"tier name(s) given twice: {', '.join(repeated)}")
    last = tiers[-1]
    if last.verified:
        raise ValueError(
            f"the last tier ({last.name!r}) must match every request (verified: false, no claims), "
            "so that unverified users and verified users no other tier matches have a tier"
        )


_MISSING = object()


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``: as it is, else (a name with dots) followed into nested objects."""
    if name in claims:
        return claims[name]
    if "." not in name:
        return _MISSING
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def claim_matches(value: Any, wanted: ClaimValue) -> bool:
    """Whether a claim's ``value`` is (or, for a list claim, contains) ``wanted`` or one of its values."""
    if value is _MISSING:
        return False
    choices = wanted if isinstance(wanted, list) else [wanted]
    present = value if isinstance(value, list) else [value]
    return any(same_json_value(have, want) for have in present for want in choices)


@dataclass(frozen=True)
class ResolvedTier:
    """A tier with everything it inherits filled in: what the gateway enforces for its users."""

    name: str
    limits: InputLimits
    #: The per-user rate limit (None: no per-user limit).
    rate_limit: RateLimit | None
    risk: RiskSettings


class Tiers:
    """The policy's tiers, resolved against the policy's limits and the gateway's settings."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        limits: InputLimits,
        per_user: RateLimit | None,
        risk: RiskSettings,
    ) -> None:
        check_tiers(tiers)
        self.tiers = list(tiers)
        self.resolved = {tier.name: self._resolve(tier, limits, per_user, risk) for tier in tiers}

    @staticmethod
    def _resolve(
        tier: Tier, limits: InputLimits, per_user: RateLimit | None, risk: RiskSettings
    ) -> ResolvedTier:
        merged = limits
        if tier.limits is not None:
            given = {name: getattr(tier.limits, name) for name in tier.limits.model_fields_set}
            merged = InputLimits.model_validate({**limits.model_dump(), **given})
        thresholds = risk
        if tier.risk is not None:
            given = {name: getattr(tier.risk, name) for name in tier.risk.model_fields_set}
            for required in ("medium_score", "throttle"):  # no rung to skip: null keeps the settings'
                if given.get(required, 0) is None:
                    del given[required]
            # Validated again: the tier's rungs must rise with the ones it keeps from the settings.
            try:
                thresholds = RiskSettings.model_validate({**risk.model_dump(), **given})
            except ValidationError as exc:
                reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                raise ValueError(f"tier {tier.name!r}: risk: {reason}") from None
        rate = tier.rate_limit if "rate_limit" in tier.model_fields_set else per_user
        return ResolvedTier(tier.name, merged, rate, thresholds)

    def __bool__(self) -> bool:
        return bool(self.tiers)

    def for_claims(self, claims: Mapping[str, Any] | None) -> ResolvedTier:
        """The first tier that matches (None: the request has no verified token)."""
        for tier in self.tiers:
            if tier.matches(claims):
                return self.resolved[tier.name]
        raise AssertionError("check_tiers makes the last tier match every request")


__all__ = [
    "ClaimValue",
    "ResolvedTier",
    "Tier",
    "TierRisk",
    "Tiers",
    "check_tiers",
    "claim_matches",
    "claim_value",
]

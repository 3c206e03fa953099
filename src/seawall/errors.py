"""One exception tree for all of seawall.

Every error a user can cause maps onto an HTTP status and OpenAI's error body
(``{"error": {"message", "type", "param", "code"}}``), so the server turns any
``SeawallError`` into a response without special cases.
"""

from __future__ import annotations

from typing import Any


class SeawallError(Exception):
    """Base class of every error seawall raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        #: A session id the gateway minted for the anonymous caller of the failed request: handed
        #: back with the error, so that caller's next refusals count against the same session.
        self.new_session: str | None = None

    def to_body(self) -> dict[str, Any]:
        """The OpenAI-style error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(SeawallError):
    """The request is malformed or breaks a documented limit."""

    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLargeError(InvalidRequestError):
    """The request body, a text or an image is larger than the configured limit."""

    status_code = 413
    default_code = "payload_too_large"


class UnsupportedMediaTypeError(InvalidRequestError):
    """The body is not declared as JSON where a browser could have sent it from another site."""

    status_code = 415
    default_code = "unsupported_media_type"


class ModelNotFoundError(InvalidRequestError):
    """The request names a model (backend) that seawall does not serve."""

    status_code = 404
    default_code = "model_not_found"


class AuthenticationError(SeawallError):
    """Missing or unknown API key."""

    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class UserTokenError(AuthenticationError):
    """An end user's token is missing where one is required, or fails verification (the message
    says which check: signature, key, issuer, audience, expiry, algorithm)."""

    default_code = "invalid_user_token"


class IdentityProviderError(SeawallError):
    """The identity provider's keys are needed to verify a user token and cannot be fetched (no
    copy is cached yet, or the provider is unreachable). Not the client's fault: 503."""

    status_code = 503
    error_type = "server_error"
    default_code = "identity_provider_unavailable"


class PermissionDeniedError(SeawallError):
    """The caller is known but may not do this (a blocked user, a revoked key, a missing role)."""

    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class RateLimitError(SeawallError):
    """A rate limit (per key or per user) or a throttle is exceeded; ``retry_after`` in seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after: float, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after


class NotFoundError(SeawallError):
    """A named thing (an API key, a user, a review item) does not exist."""

    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ConflictError(InvalidRequestError):
    """The thing is not in a state that allows this (a review item claimed by someone else)."""

    status_code = 409
    default_code = "conflict"


class GuardUnavailableError(SeawallError):
    """A guard cannot judge right now: its moderation backend is down, timed out or overloaded.

    The gateway's ``fail_mode`` applies to this family alone. Any other exception out of a
    guard is a bug in seawall: the request fails with 500 and is never let through unjudged.
    """

    status_code = 503
    error_type = "server_error"
    default_code = "guard_unavailable"


class OverloadedError(GuardUnavailableError):
    """Too much work is queued; the client should retry later."""

    status_code = 503
    error_type = "server_error"
    default_code = "overloaded"


class ConfigurationError(SeawallError):
    """Settings or a policy file are invalid; raised at start-up, never per request."""

    error_type = "configuration_error"


class PluginError(ConfigurationError):
    """A plugin (an entry point in one of seawall's groups) could not be loaded, is not what its
    group expects, or its ``plugins.<name>`` settings are invalid; the message names the
    distribution that declares it, the group and the entry point, and says why."""

    def __init__(self, message: str, *, group: str | None, name: str, distribution: str | None) -> None:
        super().__init__(message)
        self.group = group
        self.name = name
        self.distribution = distribution


class ModelArtefactError(ConfigurationError):
    """The embedded model's files are missing or inconsistent."""


class BackendError(GuardUnavailableError):
    """A moderation backend (OpenAI, Llama Guard server, ...) failed to answer."""

    status_code = 502
    error_type = "backend_error"
    default_code = "backend_unavailable"


class BackendTimeoutError(BackendError):
    """A moderation backend did not answer in time."""

    status_code = 504
    default_code = "backend_timeout"


class UpstreamError(SeawallError):
    """The gateway's upstream model server failed, or refused the request it was sent.

    Status, type and code are set per instance, because one upstream failure is
    not like another: an upstream 4xx that the client caused (a prompt longer
    than the model's context) keeps its status, type and code, while upstream
    5xx replies are 502 ``upstream_error``, timeouts 504 ``upstream_timeout``,
    an unreachable server 502 ``upstream_unreachable``, a reply that is not the
    OpenAI wire format 502 ``upstream_malformed`` and a stream cut before its
    end 502 ``upstream_stream_interrupted``. ``retry_after`` is the delay in
    seconds the upstream asked for (on 429 and 503), for the gateway to pass on.
    """

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 502,
        code: str | None = None,
        error_type: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type
        self.retry_after = retry_after


class ContentPolicyError(InvalidRequestError):
    """The gateway refused a request because its content breaks the moderation policy."""

    default_code = "content_policy_violation"


class GuardFailedError(SeawallError):
    """A guard (moderation of input or output) failed and the gateway fails closed."""

    status_code = 503
    error_type = "server_error"
    default_code = "guard_failed"


class ImageError(InvalidRequestError):
    """An image part could not be fetched or decoded."""

    default_code = "invalid_image"


class StoreError(SeawallError):
    """The store (SQLite or PostgreSQL) failed or its schema is not the one this version needs."""

    status_code = 503
    error_type = "server_error"
    default_code = "store_unavailable"


class DataError(SeawallError):
    """Training or evaluation data is missing or malformed."""

    error_type = "data_error"

"""seawall: a self-hosted, offline-first safety layer for LLM applications.

The public API::

    import seawall
    result = seawall.moderate("some text")[0]
    result.flagged, result.category_scores, result.extra_scores["prompt_injection"]
"""

from __future__ import annotations

__version__ = "0.1.0"

from seawall.api import amoderate, moderate
from seawall.categories import ALL_LABELS, CATEGORIES, EXTRA_LABELS
from seawall.errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    ConfigurationError,
    DataError,
    GuardUnavailableError,
    ImageError,
    InvalidRequestError,
    ModelArtefactError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PluginError,
    SeawallError,
)
from seawall.inputs import ImagePart, ModerationInput
from seawall.results import ModerationResult
from seawall.service import ModerationService
from seawall.settings import Settings, load_settings

__all__ = [
    "ALL_LABELS",
    "CATEGORIES",
    "EXTRA_LABELS",
    "AuthenticationError",
    "BackendError",
    "BackendTimeoutError",
    "ConfigurationError",
    "DataError",
    "GuardUnavailableError",
    "ImageError",
    "ImagePart",
    "InvalidRequestError",
    "ModelArtefactError",
    "ModelNotFoundError",
    "ModerationInput",
    "ModerationResult",
    "ModerationService",
    "OverloadedError",
    "PayloadTooLargeError",
    "PluginError",
    "SeawallError",
    "Settings",
    "__version__",
    "amoderate",
    "load_settings",
    "moderate",
]

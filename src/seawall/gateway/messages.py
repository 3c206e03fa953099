"""The gateway's name for :mod:`seawall.messages` (reading chat messages), where the helpers live
so that the review desk and the UI read messages the same way without importing the gateway."""

from seawall.messages import REASONING_FIELDS, image_parts, last_user_text, text_of

__all__ = ["REASONING_FIELDS", "image_parts", "last_user_text", "text_of"]

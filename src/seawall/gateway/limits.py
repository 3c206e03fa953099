"""Input controls: a chat request that breaks the policy's limits gets a clear 4xx before anything else.

:func:`check_request` validates an OpenAI chat completions request against :class:`InputLimits`
and raises OpenAI-style errors, cheapest checks first, so the token count only ever runs on a
request whose size in characters is already bounded:

* body not a JSON object: 400 ``invalid_body``;
* ``model`` missing or not a string: 400 ``invalid_model``, param ``model``;
* ``model`` not in ``allowed_models``: 404 ``model_not_found``, param ``model``;
* ``messages`` missing, not a list, or empty: 400 ``invalid_messages``, param ``messages``;
* more than ``max_messages`` messages: 413 ``too_many_messages``, param ``messages``;
* a message that is not an object: 400 ``invalid_message``, param ``messages[i]``;
* a role other than system, developer, user, assistant, tool: 400 ``invalid_role``,
  param ``messages[i].role``;
* content of the wrong type for its role: 400 ``invalid_content``, param ``messages[i].content``
  (or the offending part, ``messages[i].content[j].type``);
* ``max_tokens`` / ``max_completion_tokens`` not an integer ≥ 1: 400 ``invalid_max_tokens``,
  param that field;
* an enumerated field missing or not one of its values: 400 ``invalid_enum_value``, param its path;
* more than ``max_input_chars`` characters of input: 413 ``input_too_long``, param ``messages``;
* more than ``max_input_tokens`` tokens of input: 413 ``too_many_input_tokens``, param ``messages``.

Every message names the field and, for a limit, the limit's name and value.

**Content by role** (OpenAI's rules): ``system``, ``developer`` and ``tool`` take a string or a
list of ``text`` parts; ``user`` a string or a list of ``text``, ``image_url``, ``input_audio``
and ``file`` parts; ``assistant`` a string, a list of ``text`` and ``refusal`` parts, or no
content (``null``) when it carries ``tool_calls``. A ``tool`` message needs a string
``tool_call_id``.

**What counts as input** (for both characters and tokens): the text of every message (string
content, ``text`` parts, ``refusal`` parts), the name and arguments of assistant tool calls, and
the ``tools`` definitions serialised as JSON, because the model reads all of it. Images, audio
and files are not counted here (the moderation limits and the body size cap bound them).

**Tokens** are counted offline by a pluggable :data:`TokenCounter` (``str -> int``). The default,
:func:`default_token_counter`, uses the BERT WordPiece tokenizer shipped with the embedded model
(``model/artefacts/tokenizer.json``, via the ``tokenizers`` package, no network): it
*approximates* the upstream model's count, it does not equal it. Byte-pair tokenizers (GPT, Llama)
usually produce a similar number of tokens for English prose, but can differ a lot for code, other
scripts and emoji (WordPiece maps unknown characters to one ``[UNK]`` per word), and the
per-message overhead of chat templates is not counted. Set ``max_input_tokens`` with a margin, or
supply the upstream model's real tokenizer as ``count_tokens``.

**Enumerated fields** ("enumerated inputs"): ``InputLimits.enumerated_fields`` maps a dotted path
into the body (``"metadata.topic"``) to the values allowed there. The field must be present and
its value one of them; values compare by JSON type as well as value (``true`` is not ``1``).

:func:`cap_output_tokens` is the output side: it caps ``max_tokens`` and ``max_completion_tokens``
at ``max_output_tokens`` before the request goes upstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seawall.errors import InvalidRequestError, ModelNotFoundError, PayloadTooLargeError

TokenCounter = Callable[[str], int]
"""Counts the tokens in one text; :func:`check_request` sums it over the input's texts."""

EnumValue = str | bool | int | float

ROLES = ("system", "developer", "user", "assistant", "tool")
"""Roles a chat message may have."""

_PART_TYPES: dict[str, frozenset[str]] = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "tool": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
}
_OUTPUT_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


class InputLimits(BaseModel):
    """The limits :func:`check_request` enforces. None (or empty) switches a limit off."""

    # strict: a policy file that says max_messages: "10" is a mistake to report, not to coerce.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_input_chars: int | None = Field(
        200_000,
        ge=1,
        description="Most characters of input (message texts, tool calls, tool definitions); 413 above.",
    )
    max_input_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "Most input tokens, as counted by the token counter (by default an offline WordPiece "
            "approximation of the upstream's count); 413 above. None: not counted."
        ),
    )
    max_messages: int | None = Field(512, ge=1, description="Most messages in one request; 413 above.")
    max_output_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "Cap on max_tokens / max_completion_tokens sent upstream (set when the client sent none). "
            "None: no cap."
        ),
    )
    allowed_models: list[str] = Field(
        default_factory=list, description="Models a request may name; empty allows any (404 otherwise)."
    )
    enumerated_fields: dict[str, list[EnumValue]] = Field(
        default_factory=dict,
        description=(
            "Dotted paths into the request body (e.g. 'metadata.topic') mapped to the values allowed "
            "there; the field must be present and hold one of them (400 otherwise)."
        ),
    )

    @field_validator("enumerated_fields")
    @classmethod
    def _paths_and_values(cls, value: dict[str, list[EnumValue]]) -> dict[str, list[EnumValue]]:
        for path, allowed in value.items():
            if not path or any(not segment for segment in path.split(".")):
                raise ValueError(f"enumerated field path {path!r} must be dot-separated non-empty names")
            if not allowed:
                raise ValueError(f"enumerated field {path!r} must allow at least one value")
            if len({(type(item), item) for item in allowed}) != len(allowed):
                raise ValueError(f"enumerated field {path!r} lists a value more than once")
        return value


# ----------------------------------------------------------------- token counting


@cache
def _wordpiece_tokenizer(tokenizer_file: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()  # the shipped file truncates at 128 tokens, for the classifier
    tokenizer.no_padding()
    return tokenizer


def default_token_counter(tokenizer_file: str | Path | None = None) -> TokenCounter:
    """A counter backed by a ``tokenizers`` JSON file; the embedded model's WordPiece one by default.

    It counts the tokens of the text alone, with no special tokens, truncation or padding.
    The tokenizer is loaded once per file.
    """
    if tokenizer_file is None:
        from seawall.model.classifier import default_model_dir

        tokenizer_file = default_model_dir() / "tokenizer.json"
    tokenizer = _wordpiece_tokenizer(Path(tokenizer_file))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


# ----------------------------------------------------------------- helpers


def json_type_name(value: Any) -> str:
    """The JSON type of a parsed value, as error messages name it (``"string"``, ``"number"``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _invalid(message: str, param: str | None, code: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _check_content(message: Mapping[str, Any], role: str, where: str) -> None:
    param = f"{where}.content"
    if "content" not in message or message["content"] is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        raise _invalid(f"{param} is required for a '{role}' message", param, "invalid_content")
    content = message["content"]
    if isinstance(content, str):
        return
    allowed = _PART_TYPES[role]
    kinds = " or ".join(f"'{kind}'" for kind in sorted(allowed))
    if not isinstance(content, list):
        raise _invalid(
            f"{param} must be a string or an array of {kinds} parts for a '{role}' message, "
            f"not {json_type_name(content)}",
            param,
            "invalid_content",
        )
    for index, part in enumerate(content):
        part_param = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise _invalid(
                f"{part_param} must be an object, not {json_type_name(part)}", part_param, "invalid_content"
            )
        kind = part.get("type")
        if not isinstance(kind, str) or kind not in allowed:  # a list or object is unhashable
            shown = json_type_name(kind) if isinstance(kind, (list, dict)) else repr(kind)
            raise _invalid(
                f"{part_param}.type must be one of {kinds} for a '{role}' message, not {shown}",
                f"{part_param}.type",
                "invalid_content",
            )
        if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
            raise _invalid(
                f"{part_param}.{kind} must be a string, not {json_type_name(part.get(kind))}",
                f"{part_param}.{kind}",
                "invalid_content",
            )


def _check_message(message: Any, index: int) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid(f"{where} must be an object, not {json_type_name(message)}", where, "invalid_message")
    role = message.get("role")
    if role not in ROLES:
        raise _invalid(
            f"{where}.role must be one of {', '.join(repr(r) for r in ROLES)}, not {role!r}",
            f"{where}.role",
            "invalid_role",
        )
    _check_content(message, role, where)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _invalid(
            f"{where}.tool_call_id is required (a string) for a 'tool' message",
            f"{where}.tool_call_id",
            "invalid_message",
        )
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not (
        isinstance(tool_calls, list) and all(isinstance(call, dict) for call in tool_calls)
    ):
        raise _invalid(
            f"{where}.tool_calls must be an array of objects", f"{where}.tool_calls", "invalid_message"
        )


def _check_output_tokens(body: Mapping[str, Any]) -> None:
    for name in _OUTPUT_TOKEN_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid(
                f"'{name}' must be a positive integer (at least 1), not {value!r}", name, "invalid_max_tokens"
            )


def same_json_value(a: Any, b: Any) -> bool:
    """Equal as JSON values: the types must match (true is not 1, "1" is not 1); 1 and 1.0 are one number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _check_enumerated(body: Mapping[str, Any], fields: Mapping[str, list[EnumValue]]) -> None:
    for path, allowed in fields.items():
        allowed_text = ", ".join(json.dumps(value) for value in allowed)
        node: Any = body
        for segment in path.split("."):
            if not isinstance(node, dict) or segment not in node:
                raise _invalid(
                    f"'{path}' is required and must be one of: {allowed_text}", path, "invalid_enum_value"
                )
            node = node[segment]
        if not any(same_json_value(node, value) for value in allowed):
            shown = json.dumps(node) if isinstance(node, EnumValue | None) else json_type_name(node)
            raise _invalid(
                f"'{path}' must be one of: {allowed_text} (got {shown})", path, "invalid_enum_value"
            )


def input_texts(body: Mapping[str, Any]) -> Iterator[str]:
    """The texts of a (validated) request that count as input: see the module's documentation."""
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                    text = part.get(part["type"])
                    if isinstance(text, str):
                        yield text
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    if isinstance(function.get(key), str):
                        yield function[key]
    tools = body.get("tools")
    if tools:
        yield json.dumps(tools, ensure_ascii=False, separators=(",", ":"), default=str)


# ----------------------------------------------------------------- the checks


def check_request(body: Any, limits: InputLimits, *, count_tokens: TokenCounter | None = None) -> None:
    """Raise an OpenAI-style error if ``body`` (a parsed chat request) breaks ``limits``; see the table.

    ``count_tokens`` counts one text's tokens; None uses :func:`default_token_counter` (loaded only
    when ``limits.max_input_tokens`` is set).
    """
    if not isinstance(body, dict):
        raise _invalid(
            f"the request body must be a JSON object, not {json_type_name(body)}", None, "invalid_body"
        )

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required and must be a non-empty string", "model", "invalid_model")
    if limits.allowed_models and model not in limits.allowed_models:
        raise ModelNotFoundError(
            f"The model '{model}' does not exist or is not allowed here; "
            f"allowed models: {', '.join(limits.allowed_models)}",
            param="model",
        )

    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _invalid(
            f"'messages' is required and must be an array, not {json_type_name(messages)}",
            "messages",
            "invalid_messages",
        )
    if not messages:
        raise _invalid("'messages' must hold at least one message", "messages", "invalid_messages")
    if limits.max_messages is not None and len(messages) > limits.max_messages:
        raise PayloadTooLargeError(
            f"'messages' holds {len(messages)} messages; the limit (max_messages) is {limits.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    for index, message in enumerate(messages):
        _check_message(message, index)

    _check_output_tokens(body)
    _check_enumerated(body, limits.enumerated_fields)

    if limits.max_input_chars is None and limits.max_input_tokens is None:
        return
    texts = list(input_texts(body))
    if limits.max_input_chars is not None:
        chars = sum(len(text) for text in texts)
        if chars > limits.max_input_chars:
            raise PayloadTooLargeError(
                f"the input is {chars} characters long; the limit (max_input_chars) is "
                f"{limits.max_input_chars}",
                param="messages",
                code="input_too_long",
            )
    if limits.max_input_tokens is not None:
        counter = count_tokens if count_tokens is not None else default_token_counter()
        tokens = sum(counter(text) for text in texts)
        if tokens > limits.max_input_tokens:
            raise PayloadTooLargeError(
                f"the input is about {tokens} tokens long; the limit (max_input_tokens) is "
                f"{limits.max_input_tokens}",
                param="messages",
                code="too_many_input_tokens",
            )


def cap_output_tokens(
    body: Mapping[str, Any],
    max_output_tokens: int | None,
    *,
    default_field: Literal["max_tokens", "max_completion_tokens"] = "max_completion_tokens",
) -> dict[str, Any]:
    """A copy of ``body`` whose ``max_tokens`` and ``max_completion_tokens`` are at most the cap.

    Each of the two the client sent becomes ``min(requested, cap)``; when it sent neither,
    ``default_field`` (OpenAI's current name by default; ``max_tokens`` for older servers) is
    set to the cap. ``max_output_tokens=None`` returns an unchanged copy. A value that is not a
    positive integer is a 400, as in :func:`check_request`.
    """
    copy = dict(body)
    if max_output_tokens is None:
        return copy
    if isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int) or max_output_tokens < 1:
        raise ValueError("max_output_tokens must be a positive integer or None")
    _check_output_tokens(copy)
    sent = [name for name in _OUTPUT_TOKEN_FIELDS if copy.get(name) is not None]
    for name in sent:
        copy[name] = min(copy[name], max_output_tokens)
    if not sent:
        copy[default_field] = max_output_tokens
    return copy


__all__ = [
    "ROLES",
    "EnumValue",
    "InputLimits",
    "TokenCounter",
    "cap_output_tokens",
    "check_request",
    "default_token_counter",
    "input_texts",
    "json_type_name",
    "same_json_value",
]

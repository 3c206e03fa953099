"""The standard parameters of a chat completions request, checked before anything goes upstream.

OpenAI answers a parameter of the wrong type or out of its range with 400
``invalid_request_error`` naming it in ``param``; a model server behind the gateway may instead
fail (an upstream 500, reported as 502 ``upstream_error``) or quietly ignore it.
:func:`check_parameters` gives the client OpenAI's answer before the upstream is called:
code ``invalid_type`` for a value of the wrong JSON type, ``invalid_value`` for one out of range
or not among the allowed values. ``null`` stands for "not sent" everywhere.

=============================================  ==============================================
field                                          accepted
=============================================  ==============================================
``temperature``                                number, 0 to 2
``top_p``                                      number, 0 to 1
``presence_penalty``, ``frequency_penalty``    number, -2 to 2
``n``                                          integer, 1 to 128
``top_logprobs``                               integer, 0 to 20
``seed``                                       integer
``stream``, ``logprobs``, ``store``,           boolean
``parallel_tool_calls``
``stream_options``                             object; ``include_usage`` a boolean; only
                                               with ``stream: true``
``stop``                                       string, or an array of 1 to 4 strings
``logit_bias``                                 object of integers from -100 to 100
``metadata``                                   object of strings
``modalities``                                 array of strings
``response_format``                            object; ``type`` one of text, json_object, json_schema
``tools``                                      array of objects with a string ``type``; a
                                               ``function`` tool has an object ``function``
                                               with a string ``name``
``tool_choice``                                none, auto, required, or an object
``functions``                                  array of objects with a string ``name``
``function_call``                              none, auto, or an object with a string ``name``
``user``, ``safety_identifier``,               string
``service_tier``, ``reasoning_effort``,
``prompt_cache_key``, ``verbosity``
``audio``, ``prediction``,                     object
``web_search_options``
=============================================  ==============================================

``model``, ``messages``, ``max_tokens`` and ``max_completion_tokens`` are checked by
:func:`seawall.gateway.limits.check_request`, which runs first. Fields not named here pass
unchecked: model servers take their own (vLLM's ``top_k``, for one), except
:data:`PROMPT_OVERRIDES`, which would let a client rebuild the prompt around the gateway.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from seawall.errors import InvalidRequestError
from seawall.gateway.limits import json_type_name

#: Checks one field's value; ``param`` names it in the error.
FieldCheck = Callable[[Any, str], None]


def _wrong_type(value: Any, param: str, expected: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _wrong_value(param: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid value for '{param}': {why}.", param=param, code="invalid_value")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(low: float, high: float) -> FieldCheck:
    def check(value: Any, param: str) -> None:
        if not _is_number(value):
            raise _wrong_type(value, param, "a number")
        if not (math.isfinite(value) and low <= value <= high):
            raise _wrong_value(param, f"{value!r} is not between {low:g} and {high:g}")

    return check


def _integer(low: int | None = None, high: int | None = None) -> FieldCheck:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(value, param, "an integer")
        if low is not None and value < low:
            raise _wrong_value(param, f"{value} is below the minimum of {low}")
        if high is not None and value > high:
            raise _wrong_value(param, f"{value} is above the maximum of {high}")

    return check


def _boolean(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        raise _wrong_type(value, param, "a boolean")


def _string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise _wrong_type(value, param, "a string")


def _object(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise _wrong_type(value, param, "an object")


def _fields(**checks: FieldCheck) -> FieldCheck:
    """An object whose named fields, when present and not null, pass their checks."""

    def check(value: Any, param: str) -> None:
        _object(value, param)
        for name, field_check in checks.items():
            if value.get(name) is not None:
                field_check(value[name], f"{param}.{name}")

    return check


def _array(item: FieldCheck, *, min_items: int = 0, max_items: int | None = None) -> FieldCheck:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, list):
            raise _wrong_type(value, param, "an array")
        if len(value) < min_items:
            raise _wrong_value(param, f"it must hold at least {min_items} item(s)")
        if max_items is not None and len(value) > max_items:
            raise _wrong_value(param, f"it holds {len(value)} items; the most allowed is {max_items}")
        for index, element in enumerate(value):
            item(element, f"{param}[{index}]")

    return check


def _values(item: FieldCheck) -> FieldCheck:
    """An object whose every value passes ``item``."""

    def check(value: Any, param: str) -> None:
        _object(value, param)
        for key, element in value.items():
            item(element, f"{param}.{key}")

    return check


def _choice_or_object(choices: tuple[str, ...], object_check: FieldCheck = _object) -> FieldCheck:
    """One of ``choices`` (a string), or an object that passes ``object_check``."""

    def check(value: Any, param: str) -> None:
        if isinstance(value, str):
            if value not in choices:
                raise _wrong_value(param, f"{value!r} is not one of {', '.join(choices)}")
            return
        if not isinstance(value, dict):
            raise _wrong_type(value, param, f"one of {', '.join(choices)} or an object")
        object_check(value, param)

    return check


def _stop(value: Any, param: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _wrong_type(value, param, "a string or an array of strings")
    _array(_string, min_items=1, max_items=4)(value, param)


def _response_format(value: Any, param: str) -> None:
    _object(value, param)
    kinds = ("text", "json_object", "json_schema")
    kind = value.get("type")
    _string(kind, f"{param}.type")
    if kind not in kinds:
        raise _wrong_value(f"{param}.type", f"{kind!r} is not one of {', '.join(kinds)}")


def _named(value: Any, param: str) -> None:
    """An object with a string ``name`` (a function, or the function to call)."""
    _object(value, param)
    _string(value.get("name"), f"{param}.name")


def _tool(value: Any, param: str) -> None:
    _object(value, param)
    _string(value.get("type"), f"{param}.type")
    if value["type"] == "function":
        _named(value.get("function"), f"{param}.function")


#: Each checked field and its check; see the module's table.
FIELDS: dict[str, FieldCheck] = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "n": _integer(1, 128),
    "top_logprobs": _integer(0, 20),
    "seed": _integer(),
    "stream": _boolean,
    "logprobs": _boolean,
    "store": _boolean,
    "parallel_tool_calls": _boolean,
    "stream_options": _fields(include_usage=_boolean),
    "stop": _stop,
    "logit_bias": _values(_integer(-100, 100)),
    "metadata": _values(_string),
    "modalities": _array(_string),
    "response_format": _response_format,
    "tools": _array(_tool),
    "tool_choice": _choice_or_object(("none", "auto", "required")),
    "functions": _array(_named),
    "function_call": _choice_or_object(("none", "auto"), _named),
    "user": _string,
    "safety_identifier": _string,
    "service_tier": _string,
    "reasoning_effort": _string,
    "prompt_cache_key": _string,
    "verbosity": _string,
    "audio": _object,
    "prediction": _object,
    "web_search_options": _object,
}


#: Model servers' own fields that change how the prompt is built from the messages (vLLM, SGLang,
#: llama.cpp): a client could swap the chat template and lose the gateway's system prompt, continue
#: an assistant turn it wrote itself, or hand the template documents the gateway never fenced.
#: Refused with ``unknown_parameter``, as OpenAI refuses fields it does not know.
PROMPT_OVERRIDES = frozenset(
    {
        "chat_template",
        "chat_template_kwargs",
        "continue_final_message",
        "add_generation_prompt",
        "add_special_tokens",
        "documents",
        "echo",
        "prompt",
        "mm_processor_kwargs",
    }
)


def check_parameters(body: Mapping[str, Any]) -> None:
    """Raise 400 ``invalid_request_error`` naming the first standard field of ``body`` (a parsed
    chat completions request) whose value has the wrong type or is out of range, or the first of
    :data:`PROMPT_OVERRIDES` it sends."""
    if overrides := sorted(PROMPT_OVERRIDES & set(body)):
        name = overrides[0]
        raise InvalidRequestError(
            f"Unrecognized request argument supplied: {name} (it changes how the prompt is built from "
            "the messages, which the gateway's guards depend on).",
            param=name,
            code="unknown_parameter",
        )
    for name, check in FIELDS.items():
        value = body.get(name)
        if value is not None:
            check(value, name)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )


__all__ = ["FIELDS", "PROMPT_OVERRIDES", "check_parameters"]

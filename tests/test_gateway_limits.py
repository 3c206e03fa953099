"""Input controls: every limit and shape rule of a chat request, and the output token cap."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from seawall.errors import InvalidRequestError, ModelNotFoundError, PayloadTooLargeError
from seawall.gateway.limits import (
    InputLimits,
    cap_output_tokens,
    check_request,
    default_token_counter,
    input_texts,
)

NO_LIMITS = InputLimits(max_input_chars=None, max_messages=None)


def request(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-test", "messages": list(messages) or [user("Hello")]}
    body.update(extra)
    return body


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def expect(
    body: Any,
    limits: InputLimits,
    *,
    status: int,
    param: str | None,
    code: str,
    names: tuple[str, ...] = (),
    error_type: str = "invalid_request_error",
) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        check_request(body, limits)
    error = caught.value
    assert error.status_code == status
    assert error.error_type == error_type
    assert error.param == param
    assert error.code == code
    for name in names:
        assert name in error.message, (name, error.message)
    body_json = error.to_body()["error"]
    assert body_json["param"] == param and body_json["type"] == error_type
    return error


# ----------------------------------------------------------------- valid requests


def test_a_typical_request_passes_and_is_not_modified() -> None:
    body = request(
        {"role": "system", "content": "You are helpful."},
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        user(
            [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ]
        ),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": '{"x": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        max_tokens=100,
        max_completion_tokens=50,
        metadata={"topic": "billing"},
    )
    before = copy.deepcopy(body)
    check_request(
        body,
        InputLimits(
            max_input_tokens=1000,
            allowed_models=["gpt-test"],
            enumerated_fields={"metadata.topic": ["billing"]},
        ),
    )
    assert body == before


def test_default_limits_are_sane() -> None:
    limits = InputLimits()
    assert limits.max_input_chars == 200_000 and limits.max_messages == 512
    assert limits.max_input_tokens is None and limits.max_output_tokens is None
    assert limits.allowed_models == [] and limits.enumerated_fields == {}


# ----------------------------------------------------------------- body, model, messages


@pytest.mark.parametrize("body", [[], "text", None, 3])
def test_body_must_be_an_object(body: Any) -> None:
    expect(body, NO_LIMITS, status=400, param=None, code="invalid_body", names=("JSON object",))


@pytest.mark.parametrize("model", [None, "", 5])
def test_model_is_required(model: Any) -> None:
    body = request()
    if model is None:
        del body["model"]
    else:
        body["model"] = model
    expect(body, NO_LIMITS, status=400, param="model", code="invalid_model", names=("'model'",))


def test_model_outside_the_allowed_list_is_404() -> None:
    limits = InputLimits(allowed_models=["gpt-a", "gpt-b"])
    error = expect(
        request(model="gpt-secret"),
        limits,
        status=404,
        param="model",
        code="model_not_found",
        names=("gpt-secret", "gpt-a, gpt-b"),
    )
    assert isinstance(error, ModelNotFoundError)
    check_request(request(model="gpt-b"), limits)
    check_request(request(model="anything"), InputLimits())  # empty list: any model


@pytest.mark.parametrize(("messages", "fragment"), [(None, "required"), ("hi", "array"), ({}, "array")])
def test_messages_must_be_a_list(messages: Any, fragment: str) -> None:
    body = request()
    if messages is None:
        del body["messages"]
    else:
        body["messages"] = messages
    expect(
        body, NO_LIMITS, status=400, param="messages", code="invalid_messages", names=("'messages'", fragment)
    )


def test_messages_must_not_be_empty() -> None:
    body = request()
    body["messages"] = []
    expect(body, NO_LIMITS, status=400, param="messages", code="invalid_messages", names=("at least one",))


def test_too_many_messages_is_413_naming_the_limit() -> None:
    limits = InputLimits(max_messages=3)
    check_request(request(*[user("x")] * 3), limits)
    error = expect(
        request(*[user("x")] * 4),
        limits,
        status=413,
        param="messages",
        code="too_many_messages",
        names=("max_messages", "3", "4 messages"),
    )
    assert isinstance(error, PayloadTooLargeError)


@pytest.mark.parametrize("message", ["hi", ["user", "hi"], None])
def test_a_message_must_be_an_object(message: Any) -> None:
    expect(
        request(user("ok"), message),
        NO_LIMITS,
        status=400,
        param="messages[1]",
        code="invalid_message",
        names=("messages[1]", "object"),
    )


@pytest.mark.parametrize("role", [None, "function", "admin", "User", 1])
def test_a_message_needs_a_valid_role(role: Any) -> None:
    message: dict[str, Any] = {"content": "hi"}
    if role is not None:
        message["role"] = role
    expect(
        request(message),
        NO_LIMITS,
        status=400,
        param="messages[0].role",
        code="invalid_role",
        names=("messages[0].role", "'system', 'developer', 'user', 'assistant', 'tool'"),
    )


@pytest.mark.parametrize(
    ("message", "param", "fragment"),
    [
        ({"role": "user"}, "messages[0].content", "required"),
        ({"role": "user", "content": None}, "messages[0].content", "required"),
        ({"role": "user", "content": 5}, "messages[0].content", "not number"),
        ({"role": "system", "content": {"text": "x"}}, "messages[0].content", "not object"),
        ({"role": "assistant"}, "messages[0].content", "required"),
        ({"role": "user", "content": ["hi"]}, "messages[0].content[0]", "must be an object"),
        (
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]},
            "messages[0].content[0].type",
            "'text'",
        ),
        (
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]},
            "messages[0].content[0].type",
            "'refusal' or 'text'",
        ),
        (
            {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]},
            "messages[0].content[0].type",
            "'user'",
        ),
        ({"role": "user", "content": [{"type": "text", "text": 3}]}, "messages[0].content[0].text", "string"),
        ({"role": "user", "content": [{"text": "untyped"}]}, "messages[0].content[0].type", "None"),
        # Found by tests/test_fuzz_routes.py: an unhashable type was a 500.
        ({"role": "user", "content": [{"type": []}]}, "messages[0].content[0].type", "not array"),
        ({"role": "user", "content": [{"type": {"a": 1}}]}, "messages[0].content[0].type", "not object"),
        ({"role": "tool", "content": "result"}, "messages[0].tool_call_id", "tool_call_id"),
        ({"role": "assistant", "content": "x", "tool_calls": "call"}, "messages[0].tool_calls", "array"),
    ],
)
def test_wrong_content_for_the_role_is_400(message: dict[str, Any], param: str, fragment: str) -> None:
    error = expect(request(message), NO_LIMITS, status=400, param=param, code=error_code(param))
    assert param in error.message and fragment in error.message


def error_code(param: str) -> str:
    return "invalid_message" if param.endswith(("tool_call_id", "tool_calls")) else "invalid_content"


# ----------------------------------------------------------------- output tokens


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -5, 1.5, "100", True, [10]])
def test_max_tokens_must_be_a_positive_int(field: str, value: Any) -> None:
    expect(
        request(**{field: value}),
        NO_LIMITS,
        status=400,
        param=field,
        code="invalid_max_tokens",
        names=(f"'{field}'", "positive integer"),
    )


def test_max_tokens_null_is_absent() -> None:
    check_request(request(max_tokens=None, max_completion_tokens=None), NO_LIMITS)


def test_cap_output_tokens_lowers_what_was_asked_and_sets_a_missing_cap() -> None:
    body = request(max_tokens=5000, max_completion_tokens=100)
    capped = cap_output_tokens(body, 1000)
    assert (capped["max_tokens"], capped["max_completion_tokens"]) == (1000, 100)
    assert body["max_tokens"] == 5000  # a copy

    only_legacy = cap_output_tokens(request(max_tokens=4000), 256)
    assert only_legacy["max_tokens"] == 256 and "max_completion_tokens" not in only_legacy

    neither = cap_output_tokens(request(), 256)
    assert neither["max_completion_tokens"] == 256 and "max_tokens" not in neither
    legacy_default = cap_output_tokens(request(), 256, default_field="max_tokens")
    assert legacy_default["max_tokens"] == 256 and "max_completion_tokens" not in legacy_default

    null_sent = cap_output_tokens(request(max_tokens=None), 64)
    assert null_sent["max_completion_tokens"] == 64


def test_cap_output_tokens_without_a_cap_changes_nothing() -> None:
    body = request(max_tokens=5000)
    assert cap_output_tokens(body, None) == body
    assert cap_output_tokens(body, None) is not body


def test_cap_output_tokens_refuses_an_invalid_request_value() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        cap_output_tokens(request(max_completion_tokens=-1), 100)
    assert caught.value.param == "max_completion_tokens" and caught.value.status_code == 400


# ----------------------------------------------------------------- enumerated fields


TOPICS = InputLimits(enumerated_fields={"metadata.topic": ["billing", "shipping"], "temperature": [0, 0.5]})


def test_enumerated_fields_accept_the_allowed_values() -> None:
    check_request(request(metadata={"topic": "shipping"}, temperature=0), TOPICS)
    check_request(request(metadata={"topic": "billing"}, temperature=0.5), TOPICS)
    check_request(request(metadata={"topic": "billing"}, temperature=0.0), TOPICS)  # 0 == 0.0 in JSON


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"metadata": {"topic": "weapons"}, "temperature": 0}, "metadata.topic"),
        ({"metadata": {"topic": "Billing"}, "temperature": 0}, "metadata.topic"),
        ({"metadata": {"topic": ["billing"]}, "temperature": 0}, "metadata.topic"),
        ({"metadata": {}, "temperature": 0}, "metadata.topic"),
        ({"metadata": "billing", "temperature": 0}, "metadata.topic"),
        ({"temperature": 0}, "metadata.topic"),
        ({"metadata": {"topic": "billing"}, "temperature": 1}, "temperature"),
        ({"metadata": {"topic": "billing"}, "temperature": False}, "temperature"),  # false is not 0
        ({"metadata": {"topic": "billing"}}, "temperature"),
    ],
)
def test_enumerated_field_outside_its_values_is_400(extra: dict[str, Any], param: str) -> None:
    allowed = '"billing", "shipping"' if param == "metadata.topic" else "0, 0.5"
    expect(
        request(**extra),
        TOPICS,
        status=400,
        param=param,
        code="invalid_enum_value",
        names=(f"'{param}'", allowed),
    )


def test_enumerated_bool_is_not_the_number_one() -> None:
    limits = InputLimits(enumerated_fields={"metadata.flag": [True]})
    check_request(request(metadata={"flag": True}), limits)
    with pytest.raises(InvalidRequestError):
        check_request(request(metadata={"flag": 1}), limits)
    with pytest.raises(InvalidRequestError):
        check_request(request(metadata={"flag": "true"}), limits)


@pytest.mark.parametrize("fields", [{"": ["a"]}, {"a..b": ["x"]}, {"metadata.topic": []}])
def test_invalid_enumerated_configuration_is_refused(fields: dict[str, list[Any]]) -> None:
    with pytest.raises(ValidationError):
        InputLimits(enumerated_fields=fields)


def test_limits_refuse_unknown_fields_and_non_positive_values() -> None:
    with pytest.raises(ValidationError):
        InputLimits(max_chars=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        InputLimits(max_input_tokens=0)


# ----------------------------------------------------------------- characters


def test_input_characters_are_counted_over_the_whole_request() -> None:
    body = request(
        {"role": "system", "content": "a" * 10},
        user([{"type": "text", "text": "b" * 10}, {"type": "image_url", "image_url": {"url": "https://x"}}]),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "ccc", "arguments": "d" * 7}}
            ],
        },
        {"role": "tool", "tool_call_id": "1", "content": "e" * 10},
    )
    assert sum(len(t) for t in input_texts(body)) == 40
    check_request(body, InputLimits(max_input_chars=40))
    expect(
        body,
        InputLimits(max_input_chars=39),
        status=413,
        param="messages",
        code="input_too_long",
        names=("max_input_chars", "39", "40 characters"),
    )


def test_tool_definitions_count_as_input() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "x" * 500, "parameters": {}}}]
    body = request(user("hi"), tools=tools)
    check_request(request(user("hi")), InputLimits(max_input_chars=100))
    expect(body, InputLimits(max_input_chars=100), status=413, param="messages", code="input_too_long")


def test_characters_are_unicode_characters_not_bytes() -> None:
    check_request(request(user("é" * 50)), InputLimits(max_input_chars=50))


# ----------------------------------------------------------------- tokens


def test_default_counter_counts_wordpiece_tokens_of_real_text() -> None:
    count = default_token_counter()
    assert count("Hello, world!") == 4  # hello , world !
    assert count("The quick brown fox jumps over the lazy dog.") == 10
    assert count("unaffable tokenization") == 5  # una ##ffa ##ble token ##ization
    assert count("") == 0


def test_default_counter_does_not_truncate_long_text() -> None:
    # The shipped tokenizer.json truncates at 128 for the classifier; the counter must not.
    count = default_token_counter()
    assert count(" ".join(["word"] * 3000)) == 3000


def test_token_limit_is_413_naming_the_limit() -> None:
    body = request(
        {"role": "system", "content": "Hello, world!"}, user("The quick brown fox jumps over the lazy dog.")
    )
    check_request(body, InputLimits(max_input_tokens=14))
    expect(
        body,
        InputLimits(max_input_tokens=13),
        status=413,
        param="messages",
        code="too_many_input_tokens",
        names=("max_input_tokens", "13", "14 tokens"),
    )


def test_characters_are_checked_before_tokens() -> None:
    calls: list[str] = []

    def counter(text: str) -> int:
        calls.append(text)
        return 1

    with pytest.raises(PayloadTooLargeError) as caught:
        check_request(
            request(user("x" * 100)),
            InputLimits(max_input_chars=10, max_input_tokens=5),
            count_tokens=counter,
        )
    assert caught.value.code == "input_too_long" and calls == []


def test_a_custom_token_counter_is_used() -> None:
    seen: list[str] = []

    def by_bytes(text: str) -> int:
        seen.append(text)
        return len(text.encode("utf-8"))

    body = request({"role": "system", "content": "abc"}, user("日本"))  # 3 + 6 bytes
    check_request(body, InputLimits(max_input_tokens=9), count_tokens=by_bytes)
    assert seen == ["abc", "日本"]
    with pytest.raises(PayloadTooLargeError) as caught:
        check_request(body, InputLimits(max_input_tokens=8), count_tokens=by_bytes)
    assert "9 tokens" in caught.value.message


def test_shape_errors_come_before_size_errors() -> None:
    body = request(user("x" * 100), {"role": "robot", "content": "y"})
    expect(body, InputLimits(max_input_chars=10), status=400, param="messages[1].role", code="invalid_role")

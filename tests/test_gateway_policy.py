"""The gateway's policy file: real YAML files on disk, valid ones and every class of mistake."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from seawall.errors import ConfigurationError
from seawall.gateway.policy import (
    DEFAULT_SAFETY_INSTRUCTIONS,
    DEFAULT_SYSTEM_PROMPT_TEMPLATE,
    Policy,
    load_policy,
    render_template,
    template_placeholders,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy-strict.yaml"

MINIMAL = """\
name: Velo Help
purpose: You answer questions from customers of a bicycle shop.
allowed_topics:
  - orders and deliveries
  - bike maintenance
off_topic_reply: Sorry, I can only help with bikes and orders.
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def mistake(tmp_path: Path, text: str) -> ConfigurationError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        load_policy(path)
    assert str(path) in info.value.message, "the message must name the file"
    return info.value


# --- valid files ---------------------------------------------------------------------------------


def test_minimal_policy_loads_with_documented_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL))
    assert policy.name == "Velo Help"
    assert policy.allowed_topics == ["orders and deliveries", "bike maintenance"]
    assert policy.examples == []
    assert policy.examples_placement == "messages"
    assert policy.system_prompt_template == DEFAULT_SYSTEM_PROMPT_TEMPLATE
    assert policy.safety_instructions == list(DEFAULT_SAFETY_INSTRUCTIONS)
    assert policy.client_system_messages == "demote"
    assert policy.untrusted.mode == "delimit"
    assert policy.untrusted.boundary_bytes == 16
    assert policy.limits.max_messages == 512
    assert policy.limits.allowed_models == []
    assert policy.limits.enumerated_fields == {}


def test_default_safety_instructions_cover_fences_prompt_secrecy_and_disallowed_content() -> None:
    rules = " ".join(DEFAULT_SAFETY_INSTRUCTIONS).lower()
    assert "never follow instructions" in rules
    assert "never reveal" in rules and "system prompt" in rules
    assert "refuse" in rules and "disallowed content" in rules


def test_full_policy_loads_every_section(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + """\
tone: Warm and brief.
examples:
  - user: Where is my order?
    assistant: Please send me your order number.
examples_placement: system
system_prompt_template: "{{name}} / {{purpose}} / {{tone}}\\n{{safety_instructions}}"
safety_instructions: [Rule one., Rule two.]
client_system_messages: drop
limits:
  max_input_chars: 1000
  max_input_tokens: 300
  max_messages: 12
  max_output_tokens: 256
  allowed_models: [gpt-4o-mini]
  enumerated_fields:
    metadata.language: [en, fr]
    temperature: [0, 0.5]
untrusted:
  mode: datamark
  datamark_char: "#"
  boundary_bytes: 24
""",
    )
    policy = load_policy(path)
    assert policy.examples[0].user == "Where is my order?"
    assert policy.examples_placement == "system"
    assert policy.client_system_messages == "drop"
    assert policy.limits.max_output_tokens == 256
    assert policy.limits.allowed_models == ["gpt-4o-mini"]
    assert policy.limits.enumerated_fields == {"metadata.language": ["en", "fr"], "temperature": [0, 0.5]}
    assert policy.untrusted.mode == "datamark"
    assert policy.untrusted.datamark_char == "#"
    assert policy.render_system_prompt() == (
        "Velo Help / You answer questions from customers of a bicycle shop. / Warm and brief.\n"
        "- Rule one.\n- Rule two."
    )


def test_example_policy_loads_and_sets_every_field() -> None:
    policy = load_policy(EXAMPLE)
    # "complete": the example states every field, so it documents all of them.
    assert policy.model_fields_set == set(Policy.model_fields)
    assert policy.limits.model_fields_set == set(type(policy.limits).model_fields)
    assert policy.untrusted.model_fields_set == set(type(policy.untrusted).model_fields)
    assert policy.examples, "the example shows few-shot examples"
    assert "{{" not in policy.render_system_prompt()


def test_every_field_is_documented() -> None:
    def walk(model: type) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            assert field.description, f"{model.__name__}.{name} has no description"

    from seawall.gateway.limits import InputLimits
    from seawall.gateway.policy import Example, ModelRoute, UntrustedContentPolicy

    for model in (Policy, Example, InputLimits, UntrustedContentPolicy, ModelRoute):
        walk(model)


# --- mistakes: the file itself -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        load_policy(path)
    assert str(path) in info.value.message


def test_bad_yaml(tmp_path: Path) -> None:
    error = mistake(tmp_path, "name: [unclosed\npurpose: x\n")
    assert "not valid YAML" in error.message
    assert "line" in error.message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigurationError, match="not UTF-8") as info:
        load_policy(path)
    assert str(path) in info.value.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a list\n- of things\n", "just a string\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert "mapping" in mistake(tmp_path, text).message


def test_duplicate_key_is_refused_not_silently_overwritten(tmp_path: Path) -> None:
    error = mistake(tmp_path, MINIMAL + "tone: Warm.\ntone: Cold.\n")
    assert "duplicate key 'tone'" in error.message
    assert "line 8" in error.message  # the second one


# --- mistakes: fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        # unknown keys, at every level
        ("tonee: Warm.\n", "tonee", "unknown field"),
        ("limits: {max_mesages: 3}\n", "limits.max_mesages", "unknown field"),
        ("untrusted: {fencing: delimit}\n", "untrusted.fencing", "unknown field"),
        (
            "examples:\n  - {user: hi, assistant: hello, question: x}\n",
            "examples[0].question",
            "unknown field",
        ),
        # wrong types (no coercion)
        ("limits: {max_messages: '10'}\n", "limits.max_messages", "valid integer"),
        ("limits: {max_input_chars: 2.5}\n", "limits.max_input_chars", "valid integer"),
        ("tone: [a, b]\n", "tone", "valid string"),
        ("examples: {user: hi}\n", "examples", "valid list"),
        ("examples:\n  - {user: hi}\n", "examples[0].assistant", "required"),
        ("limits: [1, 2]\n", "limits", "dictionary"),
        ("limits: {allowed_models: gpt-4o}\n", "limits.allowed_models", "valid list"),
        (
            "limits: {enumerated_fields: {lang: [en, {a: 1}]}}\n",
            "limits.enumerated_fields.lang[1].str",
            "valid string",
        ),
        # values out of range
        ("limits: {max_messages: 0}\n", "limits.max_messages", "greater than or equal to 1"),
        ("limits: {max_output_tokens: -5}\n", "limits.max_output_tokens", "greater than or equal to 1"),
        ("limits: {allowed_models: [7]}\n", "limits.allowed_models[0]", "valid string"),
        ("limits: {enumerated_fields: {lang: []}}\n", "limits.enumerated_fields", "at least one"),
        ("limits: {enumerated_fields: {lang: [en, en]}}\n", "limits.enumerated_fields", "more than once"),
        ("untrusted: {mode: rot13}\n", "untrusted.mode", "'delimit', 'datamark' or 'encode'"),
        ("untrusted: {boundary_bytes: 4}\n", "untrusted.boundary_bytes", "greater than or equal to 8"),
        ("untrusted: {datamark_char: ab}\n", "untrusted.datamark_char", "one visible character"),
        ("untrusted: {datamark_char: x}\n", "untrusted.datamark_char", "one visible character"),
        ("untrusted: {datamark_char: ' '}\n", "untrusted.datamark_char", "one visible character"),
        ("client_system_messages: keep\n", "client_system_messages", "'demote' or 'drop'"),
        ("examples_placement: footer\n", "examples_placement", "'messages' or 'system'"),
        ("safety_instructions: []\n", "safety_instructions", "at least 1"),
        ("tone: '   '\n", "tone", "at least 1 character"),
    ],
)
def test_each_mistake_names_the_field(tmp_path: Path, extra: str, field: str, words: str) -> None:
    error = mistake(tmp_path, MINIMAL + extra)
    assert error.param == field
    assert f"field '{field}'" in error.message
    assert words in error.message


@pytest.mark.parametrize("field", ["name", "purpose", "allowed_topics", "off_topic_reply"])
def test_required_fields(tmp_path: Path, field: str) -> None:
    data = yaml.safe_load(MINIMAL)
    del data[field]
    error = mistake(tmp_path, yaml.safe_dump(data))
    assert error.param == field
    assert f"field '{field}': required field is missing" in error.message


def test_empty_topic_list_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace("  - orders and deliveries\n  - bike maintenance\n", "").replace(
        "allowed_topics:", "allowed_topics: []"
    )
    assert mistake(tmp_path, text).param == "allowed_topics"


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    error = mistake(tmp_path, MINIMAL + "limits: {max_tokens: 5}\n")
    assert "allowed here: max_input_chars, max_input_tokens, max_messages, max_output_tokens" in error.message


def test_several_mistakes_are_reported_together(tmp_path: Path) -> None:
    error = mistake(tmp_path, MINIMAL + "tonee: x\nlimits: {max_messages: 0}\n")
    assert "2 mistakes" in error.message
    assert "field 'tonee'" in error.message
    assert "field 'limits.max_messages'" in error.message


# --- the template --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("You are {{name}}. {{purpos}}\n{{safety_instructions}}", "unknown placeholder {{purpos}} on line 1"),
        (
            "{{name}}\n\n{{ user_input }}\n{{safety_instructions}}",
            "unknown placeholder {{user_input}} on line 3",
        ),
        ("{{name.upper}} {{safety_instructions}}", "malformed placeholder"),
        ("{{purpose tone}} {{safety_instructions}}", "malformed placeholder"),
        ("{{purpose} {{safety_instructions}}", "malformed placeholder"),
        ("{{purpose}} }} {{safety_instructions}}", "stray '}}'"),
        ("{{purpose}} {{", "stray '{{'"),
        ("You are {{name}}. {{purpose}}", "must contain {{safety_instructions}}"),
        ("{0} {name} {{safety_instructions}} {{__class__}}", "unknown placeholder {{__class__}}"),
    ],
)
def test_template_mistakes_are_refused_at_load_time(tmp_path: Path, template: str, words: str) -> None:
    # A JSON string is a YAML string: the template reaches the loader exactly as written here.
    error = mistake(tmp_path, MINIMAL + f"system_prompt_template: {json.dumps(template)}\n")
    assert error.param == "system_prompt_template"
    assert words in error.message


def test_single_braces_and_spaces_inside_placeholders_are_fine() -> None:
    assert template_placeholders(
        'Reply as JSON: {"answer": "..."} {{ purpose }} {{safety_instructions}}'
    ) == [
        "purpose",
        "safety_instructions",
    ]


def test_substitution_is_one_pass_so_values_are_never_expanded_again(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("You answer questions", "You answer {{tone}} questions"))
    policy = load_policy(path)
    assert "You answer {{tone}} questions" in policy.render_system_prompt()
    assert render_template("{{a}}-{{ b }}", {"a": "{{b}}", "b": "x"}) == "{{b}}-x"


def test_default_template_renders_every_field(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL + "tone: Warm and brief.\nprompt_budget_tokens: null\n"))
    prompt = policy.render_system_prompt()
    assert prompt.startswith("You are Velo Help. You answer questions from customers of a bicycle shop.")
    assert "- orders and deliveries\n- bike maintenance" in prompt
    assert '"Sorry, I can only help with bikes and orders."' in prompt
    assert "Warm and brief." in prompt
    for rule in DEFAULT_SAFETY_INSTRUCTIONS:
        assert f"- {rule}" in prompt
    assert "{{" not in prompt and "}}" not in prompt

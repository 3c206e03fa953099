"""What ``seawall config`` prints: every setting with its current value, its default and its
meaning, as text that reads at any width (80 columns included) or as a commented YAML file.

Secrets that were set show as ``**********``; a secret still at its default (written in
:mod:`seawall.settings` anyway) shows as it is, so the YAML view loads back unchanged.
"""

from __future__ import annotations

import textwrap
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, SecretStr
from pydantic_core import to_jsonable_python

from seawall.settings import REQUIRED, SettingDoc, Settings, field_docs, format_setting, setting_docs


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


#: The value of a setting inside a section that is None.
UNSET = _Unset()


def value_at(settings: Settings, name: str) -> Any:
    """The current value of the setting ``name`` (a :func:`~seawall.settings.setting_docs` name):
    a list (mapping) of values below ``[]`` (``*``), :data:`UNSET` inside a section that is None."""

    def walk(value: Any, parts: list[str]) -> Any:
        if not parts:
            return value
        if value is None:
            return UNSET
        head, rest = parts[0], parts[1:]
        if head == "[]":
            return [walk(item, rest) for item in value]
        if head == "*":
            return {key: walk(item, rest) for key, item in value.items()}
        return walk(getattr(value, head), rest)

    return walk(settings, name.replace("[]", ".[]").split("."))


#: Schemes of the database and cache URLs kept as secrets for their password alone: shown with only
#: the password masked, so the store's location reads (and a YAML view of a password-less one loads
#: back). Other secret URLs (webhooks carry tokens in their paths) stay masked whole.
STORE_URL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "redis", "rediss", "unix")


def _shown(value: Any, default: Any) -> Any:
    """``value`` with a secret revealed when it is the default (which the code shows anyway), and a
    store URL shown with its password masked."""
    if not isinstance(value, SecretStr):
        return value
    secret = value.get_secret_value()
    if secret == default:
        return default
    scheme = secret.split(":", 1)[0].split("+", 1)[0].lower()
    if "://" in secret and scheme in STORE_URL_SCHEMES:
        parts = urlsplit(secret)
        if parts.password is None:
            return secret
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:**********@{host}"))
    return value


def _one_line(value: Any, doc: SettingDoc) -> str:
    if value is UNSET:
        return "(unset)"
    if doc.shape in ("list", "dict") and isinstance(value, list | dict):
        return f"{len(value)} item{'' if len(value) == 1 else 's'}"
    if doc.shape == "optional" and isinstance(value, BaseModel):
        return "set"
    return format_setting(_shown(value, doc.default))


def _meaning(doc: SettingDoc) -> str:
    if doc.default is REQUIRED:
        return f"{doc.description} (required)"
    return f"{doc.description} (default: {_one_line(doc.default, doc)})"


def settings_text(settings: Settings, width: int = 80) -> str:
    """One ``name = value`` line per setting, its meaning and default indented below, wrapped at
    ``width``; names are never broken, so ``seawall config | grep name`` finds the value."""
    head = textwrap.TextWrapper(width, subsequent_indent="        ", break_long_words=False)
    body = textwrap.TextWrapper(
        width, initial_indent="    ", subsequent_indent="    ", break_long_words=False
    )
    head.break_on_hyphens = body.break_on_hyphens = False
    lines: list[str] = []
    section = ""
    for doc in setting_docs():
        top = doc.name.split(".")[0]
        if section and top != section:
            lines.append("")
        section = top
        lines.extend(head.wrap(f"{doc.name} = {_one_line(value_at(settings, doc.name), doc)}"))
        lines.extend(body.wrap(_meaning(doc)))
    return "\n".join(lines) + "\n"


HEADER = """\
seawall settings: each setting's current value (settings file, SEAWALL_* environment variables,
defaults), with its meaning and default above it. Secrets that were set show as **********: put
them back before using this as a settings file. A section that is null can be set by
uncommenting the lines below it."""


def settings_yaml(settings: Settings, width: int = 80) -> str:
    """Every setting as a YAML settings file, each key under a comment with its meaning and
    default; sections that are None are followed by a commented-out template of their fields."""
    lines = [f"# {line}" for line in textwrap.wrap(HEADER, width - 2)]
    for doc in field_docs(Settings):
        lines.append("")
        _field(doc, getattr(settings, doc.name), "", width, lines)
    return "\n".join(lines) + "\n"


# Each line starts with a ``lead``: the indentation of its level, and inside a commented-out
# template the "# " that comments it, at the template's own indentation.


def _comment(text: str, lead: str, width: int, lines: list[str]) -> None:
    wrapped = textwrap.wrap(text, max(30, width - len(lead) - 2), break_on_hyphens=False)
    lines.extend(f"{lead}# {line}" for line in wrapped)


def _dump(name: str, value: Any, lead: str, width: int, lines: list[str]) -> None:
    # PyYAML breaks a long string only after passing its width, so it gets room for a word.
    text = yaml.safe_dump(
        {name: to_jsonable_python(value)},
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=max(30, width - len(lead) - 16),
    )
    lines.extend(lead + line for line in text.splitlines())


def _section(doc: SettingDoc, instance: Any, lead: str, width: int, lines: list[str]) -> None:
    """The fields of the section ``doc``: of ``instance``, or (None) a template of the defaults."""
    assert doc.model is not None
    defaults = doc.default if isinstance(doc.default, doc.model) else None
    for field in field_docs(doc.model, defaults):
        value = getattr(instance, field.name) if instance is not None else field.default
        _field(field, value, lead, width, lines)


def _field(doc: SettingDoc, value: Any, lead: str, width: int, lines: list[str]) -> None:
    if doc.shape == "section":
        _comment(doc.description, lead, width, lines)
        lines.append(f"{lead}{doc.name}:")
        _section(doc, value, lead + "  ", width, lines)
        return
    _comment(_meaning(doc), lead, width, lines)
    if doc.shape == "optional":
        if value is None:
            lines.append(f"{lead}{doc.name}: null")
            lines.append(f"{lead}# {doc.name}:")
            _section(doc, None, lead + "#   ", width, lines)
        else:
            lines.append(f"{lead}{doc.name}:")
            _section(doc, value, lead + "  ", width, lines)
        return
    if doc.shape in ("list", "dict") and doc.model is not None:
        _comment("Each item:" if doc.shape == "list" else "Each value:", lead, width, lines)
        for item in field_docs(doc.model):
            _comment(f"  {item.name}: {_meaning(item)}", lead, width, lines)
    if value is REQUIRED:
        lines.append(f"{lead}{doc.name}:")
    else:
        _dump(doc.name, _shown(value, doc.default), lead, width, lines)


__all__ = ["UNSET", "settings_text", "settings_yaml", "value_at"]

"""A pydantic ``ValidationError`` as one short line per mistake: where it is, written as the user
writes the path (``suite.per_strategy``, ``examples[0].user``), and what is wrong, without
pydantic's documentation URLs. Shared by every file seawall reads into a model (the gateway's
policy file, ``redteam.yaml``)."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[int | str, ...]


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (``None`` left out), else the annotation alone."""
    annotation = _strip(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) if a is not type(None) for m in _members(a)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _container(annotation: Any, kind: type) -> list[Any] | None:
    """The members of the item (``kind`` Sequence) or value (``kind`` Mapping) type, if it is one."""
    origin = typing.get_origin(annotation)
    if not (isinstance(origin, type) and issubclass(origin, kind)):
        return None
    args = typing.get_args(annotation)
    return _members(args[-1]) if args else []


def _tagged_by(model: type[BaseModel], tag: str) -> bool:
    """Whether a ``Literal`` field of ``model`` takes ``tag`` (a discriminated union's tag)."""
    for field in model.model_fields.values():
        annotation = _strip(field.annotation)
        if typing.get_origin(annotation) is typing.Literal and tag in typing.get_args(annotation):
            return True
    return False


def _label(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


class _Place(typing.NamedTuple):
    path: str
    #: The fields of the model that holds the last part (for an unknown key: the allowed ones).
    allowed: list[str]
    #: The last part was the label pydantic gives one branch of a plain union (``str``, ``list[str]``).
    branch: bool


def _place(model: type[BaseModel] | None, loc: Loc, *, keep_branch_labels: bool) -> _Place:
    path = ""
    current: list[Any] = [model] if model is not None else []
    allowed: list[str] = []
    branch = False
    for part in loc:
        models = [t for t in current if _is_model(t)]
        allowed = list(models[0].model_fields) if models else []
        branch = False
        if isinstance(part, int):
            path += f"[{part}]"
            current = next((m for t in current if (m := _container(t, Sequence)) is not None), [])
            continue
        owner = next((m for m in models if part in m.model_fields), None)
        if owner is not None:
            path += f".{part}" if path else part
            current = _members(owner.model_fields[part].annotation)
            continue
        if len(current) > 1:  # pydantic names the branch of a union it tried: its tag or its type
            tagged = [m for m in models if _tagged_by(m, part)]
            if tagged:
                current = tagged
                continue
            branch = True
            current = [t for t in current if _label(t) == part]
            if not keep_branch_labels:
                continue
        else:
            current = next((m for t in current if (m := _container(t, Mapping)) is not None), [])
        path += f".{part}" if path else part
    return _Place(path or "(top level)", allowed, branch)


def _what(error: Any, allowed: list[str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field" + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    return str(error["msg"]).removeprefix("Value error, ")


def _got(error: Any) -> str:
    if error["type"] in ("extra_forbidden", "missing", "value_error"):
        return ""
    got = repr(error.get("input"))
    return f" (got {got[:60] + '...' if len(got) > 60 else got})"


def validation_problems(
    exc: ValidationError, model: type[BaseModel] | None = None, *, keep_branch_labels: bool = True
) -> list[tuple[str, str]]:
    """``(path, what is wrong)`` for every mistake in ``exc``, in order.

    ``model`` is the model that was validated: an unknown key then names the keys allowed where it
    stands, and a tagged union's tag stays out of the path (``target.url``, not ``target.http.url``).
    Without ``keep_branch_labels`` the errors of the branches of a plain union (``str | list[str]``)
    at one place become one mistake (``suite.strategies[0]: Input should be a valid string, or a
    valid list``) instead of one per branch, each under a path ending in the branch's type.
    """
    problems: list[tuple[str, str]] = []
    merged: dict[str, int] = {}
    for error in exc.errors():
        place = _place(model, tuple(error["loc"]), keep_branch_labels=keep_branch_labels)
        what = _what(error, place.allowed)
        if place.branch and not keep_branch_labels and place.path in merged:
            index = merged[place.path]
            path, before = problems[index]
            lead = "Input should be "
            more = what.removeprefix(lead) if before.startswith(lead) else what
            problems[index] = (path, f"{before.removesuffix(_got(error))}, or {more}{_got(error)}")
            continue
        if place.branch:
            merged[place.path] = len(problems)
        problems.append((place.path, what + _got(error)))
    return problems

"""One rule for every plugin: entry points, loaded lazily and once, instance or factory.

seawall finds moderation backends, gateway steps and red-team probes, strategies and detectors
(the built-in backends too) through Python entry points, all with :func:`load_group`:

* **lazy**: the group lists names without importing anything; a plugin is imported when it is
  asked for by name, so a broken plugin nobody uses never breaks start-up;
* **cached**: a group is read once per ``sys.path`` (installing a plugin into a running process,
  as the tests do, is seen) and each entry point is imported once;
* **instance or factory**: the object an entry point names is used as it is when it already is
  what the group expects; a class, or any other callable, is a factory, called with the group's
  arguments (the settings for a backend, the gateway for a step, nothing for the red team) and,
  when the plugin declares a ``settings_model``, with ``config=`` its validated
  ``plugins.<name>`` settings section;
* **errors** are :class:`~seawall.errors.PluginError`, which names the distribution, the group
  and the entry point, and says why (it could not be imported, it is not what the group expects,
  its settings are invalid).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from seawall.errors import PluginError

if TYPE_CHECKING:
    from seawall.settings import Settings

#: The entry-point groups seawall reads.
BACKENDS = "seawall.backends"
STEPS = "seawall.steps"
PROBES = "seawall.redteam.probes"
STRATEGIES = "seawall.redteam.strategies"
DETECTORS = "seawall.redteam.detectors"
GROUPS: tuple[str, ...] = (BACKENDS, STEPS, PROBES, STRATEGIES, DETECTORS)

T = TypeVar("T")

#: Loaded entry-point objects by (group, name, value, where the distribution lies): imported once.
_loaded: dict[tuple[str, str, str, str], Any] = {}
#: Each group's plugins, with the ``sys.path`` they were read under.
_groups: dict[tuple[str, Any], tuple[tuple[str, ...], PluginGroup[Any]]] = {}


def _distribution(entry: EntryPoint) -> tuple[str, str]:
    """The name of the distribution that declares ``entry`` and where it lies."""
    dist = entry.dist
    if dist is None:
        return "an unknown distribution", ""
    return dist.metadata["Name"] or "an unnamed distribution", str(dist.locate_file(""))


@dataclass(eq=False)
class Plugin(Generic[T]):
    """One entry point of a group: imported by :meth:`load`, built by :meth:`create`."""

    group: str
    name: str
    #: ``module:attribute``, as the entry point says.
    value: str
    #: The distribution (package) that declares it.
    distribution: str
    expected: type[T]
    _entry: EntryPoint = field(repr=False)
    _where: str = field(repr=False, default="")

    def error(self, why: str) -> PluginError:
        """A :class:`PluginError` about this plugin."""
        return PluginError(
            f"plugin {self.name!r} ({self.group} entry point {self.name} = {self.value}, "
            f"from distribution {self.distribution!r}) {why}",
            group=self.group,
            name=self.name,
            distribution=self.distribution,
        )

    def load(self) -> Any:
        """The object the entry point names, imported once."""
        key = (self.group, self.name, self.value, self._where)
        if key not in _loaded:
            try:
                _loaded[key] = self._entry.load()
            except Exception as exc:  # an import error, or any exception the module raised
                raise self.error(f"could not be loaded: {type(exc).__name__}: {exc}") from exc
        return _loaded[key]

    @property
    def settings_model(self) -> type[BaseModel] | None:
        """The pydantic model of the plugin's ``plugins.<name>`` section, if it declares one."""
        model = getattr(self.load(), "settings_model", None)
        if model is None:
            return None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise self.error("declares a settings_model that is not a pydantic model")
        return model

    def config(self, values: Mapping[str, Any] | None) -> BaseModel | None:
        """``values`` (the plugin's settings section) validated by its settings model."""
        model = self.settings_model
        if model is None:
            if values:
                raise self.error("takes no settings (it declares no settings_model), yet plugins sets some")
            return None
        try:
            return model.model_validate(_decoded(dict(values or {})))
        except ValidationError as exc:
            problems = "; ".join(
                f"plugins.{self.name}.{'.'.join(str(p) for p in e['loc']) or '(section)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise self.error(f"has invalid settings: {problems}") from exc

    def create(self, *args: Any, settings: Settings | None = None) -> T:
        """The plugin's object: the entry point's object itself when it already is what the group
        expects (a class never is: it is instantiated), else the result of calling it with
        ``args`` (and ``config=``, see the module)."""
        made = self._make(args, settings)
        if not isinstance(made, self.expected):
            raise self.error(f"gave {type(made).__name__}, not {self.expected.__name__}")
        return made

    def create_many(self, *args: Any, settings: Settings | None = None) -> list[T]:
        """As :meth:`create`, where a factory may also give a list of objects."""
        made = self._make(args, settings)
        items = list(made) if isinstance(made, list | tuple) else [made]
        for item in items:
            if not isinstance(item, self.expected):
                raise self.error(f"gave {type(item).__name__}, not {self.expected.__name__}")
        return items

    def _make(self, args: tuple[Any, ...], settings: Settings | None) -> Any:
        loaded = self.load()
        if not isinstance(loaded, type) and isinstance(loaded, self.expected):
            return loaded
        if not callable(loaded):
            raise self.error(f"is {type(loaded).__name__}: neither {self.expected.__name__} nor a factory")
        if self.settings_model is None:
            return loaded(*args)
        config = self.config(settings.plugins.get(self.name) if settings is not None else None)
        return loaded(*args, config=config)


def _decoded(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with JSON lists and objects given as text (``SEAWALL_PLUGINS__X__WORDS='["a"]'``:
    the environment holds only strings) decoded; scalars the settings model converts itself."""
    decoded = dict(values)
    for key, value in values.items():
        if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                continue
            if isinstance(parsed, list | dict):
                decoded[key] = parsed
        elif isinstance(value, dict):
            decoded[key] = _decoded(value)
    return decoded


class PluginGroup(Mapping[str, Plugin[T]]):
    """The plugins of one entry-point group by name; nothing is imported until used."""

    def __init__(self, group: str, expected: type[T], entries: Mapping[str, EntryPoint]) -> None:
        self.group = group
        self._plugins: dict[str, Plugin[T]] = {}
        for name, entry in entries.items():
            distribution, where = _distribution(entry)
            self._plugins[name] = Plugin(group, name, entry.value, distribution, expected, entry, where)

    def __getitem__(self, name: str) -> Plugin[T]:
        return self._plugins[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._plugins)

    def __len__(self) -> int:
        return len(self._plugins)

    def built(self, *args: Any, settings: Settings | None = None) -> Mapping[str, T]:
        """The plugins' objects by name, each built (:meth:`Plugin.create`) when first looked up."""
        return _Built(self, args, settings)


class _Built(Mapping[str, T]):
    def __init__(self, group: PluginGroup[T], args: tuple[Any, ...], settings: Settings | None) -> None:
        self._group, self._args, self._settings = group, args, settings
        self._made: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        if name not in self._made:
            self._made[name] = self._group[name].create(*self._args, settings=self._settings)
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._group)

    def __len__(self) -> int:
        return len(self._group)


def load_group(group: str, expected: Any) -> PluginGroup[Any]:
    """The plugins registered in the entry-point ``group``, whose objects must be ``expected``
    instances (see the module for the rule). ``expected`` may be a runtime-checkable protocol."""
    path = tuple(sys.path)
    key = (group, expected)
    cached = _groups.get(key)
    if cached is None or cached[0] != path:
        entries = {entry.name: entry for entry in entry_points(group=group)}
        cached = (path, PluginGroup(group, expected, entries))
        _groups[key] = cached
    plugins: PluginGroup[Any] = cached[1]
    return plugins


class Overlay(Mapping[str, T]):
    """Plugins over built-ins: ``first`` (a plugin of a built-in's name wins), then ``then``; a
    lookup or ``in`` touches ``first`` only as far as it must (nothing is built by ``in``)."""

    def __init__(self, first: Mapping[str, T], then: Mapping[str, T]) -> None:
        self._first, self._then = first, then

    def __getitem__(self, name: str) -> T:
        return self._first[name] if name in self._first else self._then[name]

    def __contains__(self, name: object) -> bool:
        return name in self._first or name in self._then

    def __iter__(self) -> Iterator[str]:
        yield from self._then
        yield from (name for name in self._first if name not in self._then)

    def __len__(self) -> int:
        return len(set(self._first) | set(self._then))


def named(name: str) -> list[Plugin[Any]]:
    """Every plugin called ``name``, in any of seawall's groups."""
    return [plugins[name] for group in GROUPS if name in (plugins := load_group(group, object))]


def check_plugin_settings(sections: Mapping[str, Any]) -> None:
    """Raise :class:`PluginError` unless every ``plugins.<name>`` section names an installed plugin
    and its values pass that plugin's settings model."""
    for name, values in sections.items():
        found = named(name)
        if not found:
            known = sorted({n for group in GROUPS for n in load_group(group, object)})
            raise PluginError(
                f"plugins.{name}: no plugin named {name!r} is installed; installed plugins: "
                f"{', '.join(known) or 'none'}",
                group=None,
                name=name,
                distribution=None,
            )
        models = [plugin for plugin in found if plugin.settings_model is not None]
        if not models:
            raise found[0].error("takes no settings (it declares no settings_model), yet plugins sets some")
        for plugin in models:
            plugin.config(values)


def clear_cache() -> None:
    """Forget every group read and every object loaded."""
    _loaded.clear()
    _groups.clear()


__all__ = [
    "BACKENDS",
    "DETECTORS",
    "GROUPS",
    "PROBES",
    "STEPS",
    "STRATEGIES",
    "Overlay",
    "Plugin",
    "PluginGroup",
    "check_plugin_settings",
    "clear_cache",
    "load_group",
    "named",
]

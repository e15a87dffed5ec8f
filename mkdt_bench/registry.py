"""One small registry type for methods, models, data sets and evaluators (timm-style).

Built-ins register with a decorator::

    METHODS = Registry("method", entry_point_group="mkdt_bench.methods")

    @METHODS.register("random")
    class RandomSubset: ...

Third-party packages register without touching the harness by declaring an entry
point in the registry's group, e.g. in their ``pyproject.toml``::

    [project.entry-points."mkdt_bench.methods"]
    my-method = "my_package.my_method:MyMethod"

Entry points are loaded lazily, the first time a registry is queried. A registry of
classes with a ``name`` attribute (methods, evaluators) gives each class the name it is
registered under, the entry point's name included (:func:`named_class`). A plug-in that
cannot be used (its module raises on import, or it is not what the registry holds) is
named in one :class:`PluginWarning` and skipped: one broken package does not stop every
command (issue 29 §5).
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, cast

from mkdt_bench.errors import UserError
from mkdt_bench.options import did_you_mean

T = TypeVar("T")
C = TypeVar("C", bound=type)

#: Environment variable listing the plug-ins already warned about, so that the worker
#: processes of a run (which inherit it) do not repeat the warning.
WARNED_ENV = "MKDT_BENCH_SKIPPED_PLUGINS"


class PluginWarning(UserWarning):
    """A third-party plug-in that is not used; the CLI prints it as one ``warning:`` line."""


class Registry(Generic[T]):
    """A name -> object mapping with decorator registration and entry-point plug-ins.

    Args:
        kind: what the registry holds, used in error messages ("method", "model", ...).
        entry_point_group: the ``importlib.metadata`` group scanned for plug-ins.
        on_add: ``(name, obj) -> obj`` applied to everything registered, by decorator or
            entry point (e.g. :func:`named_class`); what it returns is what is stored.
        base: the class every plug-in must subclass (methods, evaluators); without it a
            plug-in must be callable (model and data-set factories).
    """

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 on_add: Callable[[str, T], T] | None = None, base: type | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.base = base
        self._on_add = on_add
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None
        # Prefix handlers resolve parametrised names such as "timm:resnet50" or
        # "imagefolder:/data/x" to an object built on demand.
        self._prefixes: dict[str, Callable[[str], T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records ``obj`` under ``name``; duplicate names are an error."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; returns what is stored (``on_add``'s result)."""
        stored = self._on_add(name, obj) if self._on_add else obj
        if name in self._items and self._items[name] is not stored:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = stored
        return stored

    def register_prefix(self, prefix: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
        """Decorator for a factory that resolves ``"<prefix>:<argument>"`` names."""

        def decorator(factory: Callable[[str], T]) -> Callable[[str], T]:
            self._prefixes[prefix] = factory
            return factory

        return decorator

    def _load_plugins(self) -> None:
        if self._plugins_loaded or self.entry_point_group is None:
            return
        self._plugins_loaded = True
        plugins: dict[str, str] = {}
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in plugins:
                self._skip(ep.name, ep.value, f"the plug-in {plugins[ep.name]} has that name")
            elif ep.name in self._items:
                if ep.value.split(":")[0].split(".")[0] != "mkdt_bench":
                    self._skip(ep.name, ep.value, f"mkdt-bench has a built-in {self.kind} of "
                                                  "that name; register the plug-in under "
                                                  "another name")
            else:
                try:
                    self.add(ep.name, self._checked(ep.load()))
                    plugins[ep.name] = ep.value
                except Exception as e:  # noqa: BLE001 - a third party's module may raise anything
                    reason = str(e).splitlines()[0][:200] if str(e) else ""
                    self._skip(ep.name, ep.value, f"{type(e).__name__}"
                                                  + (f": {reason}" if reason else ""))

    def _checked(self, obj: T) -> T:
        """``obj`` if it is what this registry holds, else a TypeError saying what is needed."""
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise TypeError(f"{obj!r} is not a subclass of {self.base.__module__}."
                            f"{self.base.__qualname__}")
        if self.base is None and not callable(obj):
            raise TypeError(f"{obj!r} is not callable")
        return obj

    def _skip(self, name: str, value: str, reason: str) -> None:
        """One warning (in this process and none in the workers it starts) naming the
        plug-in that is not used and why."""
        tag = f"{self.entry_point_group}:{name}={value}"
        warned = os.environ.get(WARNED_ENV, "")
        if tag in warned.split("\n"):
            return
        os.environ[WARNED_ENV] = f"{warned}\n{tag}" if warned else tag
        warnings.warn(f"{self.kind} plug-in {name!r} ({value}) is not used: {reason}",
                      PluginWarning, stacklevel=4)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style wildcard, sorted."""
        self._load_plugins()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def prefixes(self) -> list[str]:
        return sorted(f"{p}:<...>" for p in self._prefixes)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        prefix = name.split(":", 1)[0] if ":" in name else None
        return name in self._items or (prefix is not None and prefix in self._prefixes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises a UserError listing all."""
        self._load_plugins()
        if name in self._items:
            return self._items[name]
        if ":" in name:
            prefix, argument = name.split(":", 1)
            if prefix in self._prefixes:
                return self._prefixes[prefix](argument)
        known = self.names() + self.prefixes()
        hint = did_you_mean(name, known)
        raise UserError(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}")

    def create(self, name: str, **kwargs: Any) -> Any:
        """Look up ``name`` and call it with ``kwargs`` (the ``create_model`` pattern)."""
        return self.get(name)(**kwargs)  # type: ignore[operator]


def named_class(name: str, cls: C) -> C:
    """``cls`` carrying its registered name in its ``name`` attribute (what error messages,
    stored sets and result rows show): set on the class itself unless the class declares
    another name of its own, then on a subclass (one class under two names)."""
    own = cls.__dict__.get("name", "")
    if own in ("", name):
        cls.name = name  # type: ignore[attr-defined]
        return cls
    return cast(C, type(cls.__name__, (cls,), {"name": name, "__module__": cls.__module__,
                                               "__doc__": cls.__doc__}))

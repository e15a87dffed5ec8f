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
registered under, the entry point's name included (:func:`named_class`).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from mkdt_bench.errors import UserError
from mkdt_bench.options import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with decorator registration and entry-point plug-ins.

    Args:
        kind: what the registry holds, used in error messages ("method", "model", ...).
        entry_point_group: the ``importlib.metadata`` group scanned for plug-ins.
        on_add: ``(name, obj) -> obj`` applied to everything registered, by decorator or
            entry point (e.g. :func:`named_class`); what it returns is what is stored.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 on_add: Callable[[str, T], T] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
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
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._items:
                self.add(ep.name, ep.load())
            elif ep.value.split(":")[0].split(".")[0] != "mkdt_bench":
                warnings.warn(f"{self.kind} plug-in {ep.name!r} ({ep.value}) is not used: "
                              f"mkdt-bench has a built-in {self.kind} of that name; register "
                              "the plug-in under another name", stacklevel=3)

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


def named_class(name: str, cls: type) -> type:
    """``cls`` carrying its registered name in its ``name`` attribute (what error messages,
    stored sets and result rows show): set on the class itself unless the class declares
    another name of its own, then on a subclass (one class under two names)."""
    own = cls.__dict__.get("name", "")
    if own in ("", name):
        cls.name = name  # type: ignore[attr-defined]
        return cls
    return type(cls.__name__, (cls,), {"name": name, "__module__": cls.__module__,
                                       "__doc__": cls.__doc__})

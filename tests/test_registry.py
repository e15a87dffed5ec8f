"""Registry: decorator registration, prefixes, unknown names, entry-point plug-ins."""

from __future__ import annotations

import sys
import textwrap

import pytest

from mkdt_bench.errors import UserError
from mkdt_bench.registry import Registry, named_class


def test_register_get_and_list():
    reg: Registry = Registry("thing")

    @reg.register("alpha")
    def alpha():
        return 1

    reg.add("beta", lambda: 2)
    assert reg.get("alpha") is alpha
    assert reg.names() == ["alpha", "beta"]
    assert reg.names("a*") == ["alpha"]
    assert reg.create("beta") == 2
    assert "alpha" in reg and "gamma" not in reg


def test_duplicate_name_is_rejected():
    reg: Registry = Registry("thing")
    reg.add("x", object())
    with pytest.raises(ValueError, match="already registered"):
        reg.add("x", object())


def test_unknown_name_lists_known_and_suggests():
    reg: Registry = Registry("method")
    reg.add("random", object())
    reg.add("mkdt", object())
    with pytest.raises(UserError) as e:
        reg.get("randon")
    msg = str(e.value)
    assert "unknown method 'randon'" in msg and "did you mean 'random'" in msg
    assert "mkdt" in msg and "\n" not in msg


def test_prefix_factory():
    reg: Registry = Registry("dataset")

    @reg.register_prefix("folder")
    def folder(arg):
        return f"loaded {arg}"

    assert reg.get("folder:/x/y") == "loaded /x/y"
    assert "folder:anything" in reg
    assert reg.prefixes() == ["folder:<...>"]


def test_entry_point_plugin(tmp_path, monkeypatch):
    """A third-party package registers a method through its entry point alone."""
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent("""
        from mkdt_bench.methods import Method

        class Plugged(Method):
            defaults = {"size": 3}

            def distill(self, ctx):
                return self.make_set(ctx, ctx.images[: self.config["size"]],
                                     ctx.targets[: self.config["size"]])
    """))
    dist = tmp_path / "my_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mkdt_bench.methods]\nplugged = my_plugin:Plugged\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("method", entry_point_group="mkdt_bench.methods",
                             on_add=named_class)
    cls = reg.get("plugged")
    assert cls.__name__ == "Plugged" and cls(size=2).config == {"size": 2}
    assert "plugged" in reg.names()
    assert cls.name == "plugged"  # the entry point's name reaches the class
    with pytest.raises(UserError, match="method 'plugged': unknown option 'sise'"):
        cls(sise=2)
    sys.modules.pop("my_plugin", None)


def test_a_plugin_shadowed_by_a_builtin_is_named_in_a_warning(tmp_path, monkeypatch):
    dist = tmp_path / "shadow-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mkdt_bench.methods]\nrandom = shadow:Random\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("method", entry_point_group="mkdt_bench.methods")
    reg.add("random", object)
    with pytest.warns(UserWarning, match=r"method plug-in 'random' \(shadow:Random\) is not "
                      "used: mkdt-bench has a built-in method of that name"):
        reg.names()
    assert reg.get("random") is object


def test_a_class_registered_under_another_name_keeps_its_own():
    class Named:
        name = "first"

    reg: Registry = Registry("method", on_add=named_class)
    reg.add("first", Named)
    alias = reg.add("second", Named)
    assert reg.get("first") is Named and Named.name == "first"
    assert alias.name == "second" and issubclass(alias, Named)

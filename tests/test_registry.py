"""Registry: decorator registration, prefixes, unknown names, entry-point plug-ins."""

from __future__ import annotations

import sys
import textwrap
import warnings

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
        from mkdt_bench.options import Interval, Opt

        class Plugged(Method):
            options = {"size": Opt(3, Interval(int, 1, None), "images to keep")}

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


def plugin_dist(root, name: str, entry_points: str, module: str | None = None) -> None:
    """An installed distribution ``name`` declaring ``entry_points`` (and its module)."""
    dist = root / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    if module is not None:
        (root / f"{name}.py").write_text(textwrap.dedent(module))


@pytest.mark.parametrize("module, value, reason", [
    ("raise RuntimeError('no GPU driver')\n", "broken_import:Thing",
     "RuntimeError: no GPU driver"),
    ("x = 1\n", "broken_missing:Thing", "AttributeError"),
    ("Thing = 3\n", "broken_kind:Thing", "3 is not a subclass of mkdt_bench.methods.base.Method"),
    ("class Thing:\n    pass\n", "broken_class:Thing", "is not a subclass of"),
    (None, "nowhere_at_all:Thing", "ModuleNotFoundError"),
])
def test_a_broken_plugin_is_named_in_one_warning_and_skipped(tmp_path, monkeypatch, module,
                                                             value, reason):
    """A plug-in whose module raises on import, or whose object is not a Method, does not
    stop the registry: one warning names it, its entry point and why; the others work."""
    from mkdt_bench.methods import Method
    from mkdt_bench.registry import WARNED_ENV, PluginWarning

    monkeypatch.setenv(WARNED_ENV, "")  # restored afterwards
    package = value.split(":")[0]
    plugin_dist(tmp_path, package, f"[test.broken]\nbad = {value}\n", module)
    plugin_dist(tmp_path, "fine_plugin", "[test.broken]\ngood = fine_plugin:Good\n",
                "from mkdt_bench.methods import Method\n\nclass Good(Method):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("method", entry_point_group="test.broken", on_add=named_class,
                             base=Method)
    reg.add("random", Method)
    with pytest.warns(PluginWarning) as caught:
        assert reg.names() == ["good", "random"]
    message, = [str(w.message) for w in caught]
    assert message.startswith(f"method plug-in 'bad' ({value}) is not used: ")
    assert reason in message and "\n" not in message
    assert reg.get("good").name == "good"
    with pytest.raises(UserError, match="unknown method 'bad'"):
        reg.get("bad")
    for name in (package, "fine_plugin"):
        sys.modules.pop(name, None)


def test_a_skipped_plugin_is_warned_about_once_per_run(tmp_path, monkeypatch):
    """The warning is given once per run: worker processes inherit the list of the
    plug-ins already named."""
    from mkdt_bench.registry import WARNED_ENV

    monkeypatch.setenv(WARNED_ENV, "")  # restored afterwards
    plugin_dist(tmp_path, "once_plugin", "[test.once]\nbad = once_plugin:Thing\n",
                "raise ImportError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="'bad'"):
        Registry("model", entry_point_group="test.once").names()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Registry("model", entry_point_group="test.once").names() == []
    sys.modules.pop("once_plugin", None)


def test_a_plugin_that_is_not_callable_is_skipped_by_a_registry_of_factories(tmp_path,
                                                                               monkeypatch):
    from mkdt_bench.registry import WARNED_ENV

    monkeypatch.setenv(WARNED_ENV, "")  # restored afterwards
    plugin_dist(tmp_path, "value_plugin", "[test.factories]\nbad = value_plugin:VALUE\n",
                "VALUE = 'not a factory'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="'not a factory' is not callable"):
        assert Registry("model", entry_point_group="test.factories").names() == []
    sys.modules.pop("value_plugin", None)


def test_two_plugins_of_one_name_keep_the_first(tmp_path, monkeypatch):
    from mkdt_bench.registry import WARNED_ENV

    monkeypatch.setenv(WARNED_ENV, "")  # restored afterwards
    plugin_dist(tmp_path, "first_plugin", "[test.twice]\nsame = first_plugin:make\n",
                "def make():\n    return 1\n")
    plugin_dist(tmp_path, "second_plugin", "[test.twice]\nsame = second_plugin:make\n",
                "def make():\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("model", entry_point_group="test.twice")
    with pytest.warns(UserWarning, match=r"plug-in 'same' \(\w+_plugin:make\) is not used: "
                                         r"the plug-in \w+_plugin:make has that name"):
        assert reg.create("same") in (1, 2)
    for name in ("first_plugin", "second_plugin"):
        sys.modules.pop(name, None)


def test_options_are_declared_once_and_the_rest_is_derived():
    from mkdt_bench.methods import Method
    from mkdt_bench.options import Interval, Opt

    class Declared(Method):
        options = {"steps": Opt(5, Interval(int, 1, None), "outer steps"),
                   "mode": Opt("a", ("a", "b"), "which mode"), "flag": Opt(False)}

    assert Declared.defaults == {"steps": 5, "mode": "a", "flag": False}
    assert Declared.bounds == {"steps": Interval(int, 1, None)}
    assert Declared.choices == {"mode": ("a", "b")}
    assert Declared(steps="7").config == {"steps": 7, "mode": "a", "flag": False}
    with pytest.raises(UserError, match=r"steps=0 must be an int in \[1, inf\)"):
        Declared(steps=0)
    assert [o.allowed_text() for o in Declared.options.values()] == [
        "an int in [1, inf)", "one of 'a', 'b'", "a bool"]


@pytest.mark.parametrize("derived", ["defaults", "choices", "bounds"])
def test_a_class_setting_a_derived_table_is_refused_at_definition(derived):
    from mkdt_bench.methods import Method

    with pytest.raises(TypeError, match=f"sets {derived}; declare each option once"):
        type("Legacy", (Method,), {derived: {}})


def test_list_options_prints_default_allowed_values_and_help(cli_here):
    code, out, _ = cli_here("list", "--options", "krrst")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "method 'krrst': set with --set methods.krrst.OPTION=VALUE"
    at = lines.index("  outer_steps = 160000  (an int in [1, inf))")
    assert lines[at + 1] == "      outer updates (§2.3)"
    assert "  outer_optimizer = 'adam'  (one of 'adam', 'sgd')" in lines
    code, out, _ = cli_here("list", "--options", "random-ssl")
    assert "  ssl = the [teacher] value  (one of 'barlow_twins', 'simclr')" in out.splitlines()
    code, out, _ = cli_here("list", "--options", "knn")
    assert out.splitlines()[:2] == ["evaluator 'knn': set with --set evaluators.knn.OPTION=VALUE",
                                    "  k = 20  (an int in [1, inf))"]


def test_every_builtin_option_has_help():
    from mkdt_bench.evaluators import EVALUATORS
    from mkdt_bench.methods import METHODS

    for registry in (METHODS, EVALUATORS):
        for name in registry.names():
            missing = [k for k, o in registry.get(name).options.items() if not o.help]
            assert not missing, f"{name}: {missing}"


def test_list_options_of_an_unknown_name_is_one_line(cli_here):
    code, _, err = cli_here("list", "--options", "krst")
    assert code == 2
    assert err.startswith("error: --options 'krst': no method or evaluator of that name "
                          "(did you mean 'krrst'?); known: dm-ssl,")

"""A plug-in installed with pip: its registered name reaches the class and every record,
and editing its code (or ``--recompute``) recomputes its results instead of reusing them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PLUGIN = '''
import torch

from mkdt_bench.methods import Method
from mkdt_bench.options import Opt


class KCenter(Method):
    """Greedy k-center selection in teacher-representation space."""

    options = {"normalise": Opt(True, help="distances between L2-normalised targets")}

    def distill(self, ctx):
        feats = ctx.targets
        if self.config["normalise"]:
            feats = torch.nn.functional.normalize(feats, dim=1)
        chosen = [FIRST]
        dist = (feats - feats[FIRST]).norm(dim=1)
        for _ in range(ctx.budget - 1):
            i = int(dist.argmax())
            chosen.append(i)
            dist = torch.minimum(dist, (feats - feats[i]).norm(dim=1))
        idx = torch.tensor(chosen)
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=chosen)
'''

FAST = ["--set", "teacher.arch=convnet", "--set", "teacher.epochs=1", "--set",
        "teacher.proj_dim=64", "--set", "teacher.batch_size=128", "--set", "pretrain.epochs=2",
        "--no-progress", "--threads", "1", "--seeds", "0", "--fractions", "0.05"]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path, source: str) -> Path:
    """A pure-Python wheel of the module ``kcenter_plugin`` whose entry point registers
    ``KCenter`` as the method ``centre`` (what a ``pyproject.toml`` like the README's
    builds), written without a build backend so that pip installs it offline."""
    dist = "kcenter_plugin-0.1.dist-info"
    files = {
        "kcenter_plugin.py": source.encode(),
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: kcenter-plugin\nVersion: 0.1\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
        f"{dist}/entry_points.txt": b"[mkdt_bench.methods]\ncentre = kcenter_plugin:KCenter\n",
    }
    record = "\n".join([*(_record_line(n, d) for n, d in files.items()), f"{dist}/RECORD,,"])
    wheel = folder / "kcenter_plugin-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/RECORD", record + "\n")
    return wheel


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plug-in, installed by pip into its own site directory."""
    tmp = tmp_path_factory.mktemp("plugin")
    wheel = build_wheel(tmp, PLUGIN.replace("FIRST", "0"))
    site = tmp / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                          "--quiet", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (site / "kcenter_plugin-0.1.dist-info" / "entry_points.txt").is_file()
    return site


def cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "mkdt_bench.cli", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def stored_sets(cache: Path) -> dict[str, dict]:
    """``{key: manifest}`` of every stored distilled set."""
    return {p.parent.name: json.loads(p.read_text())
            for p in (cache / "artifacts" / "distilled").glob("*/manifest.json")}


@pytest.mark.slow
def test_plugin_name_reaches_the_class_and_its_records(plugin_site, tmp_path):
    listed = cli(plugin_site, "list")
    assert listed.returncode == 0 and "centre" in listed.stdout
    bad = cli(plugin_site, "run", "--methods", "centre", "--set",
              "methods.centre.normalize=false", "--cache-dir", str(tmp_path / "c"))
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: method 'centre': unknown option 'normalize' "
                                  "(did you mean 'normalise'?); allowed: normalise")
    cache = tmp_path / "cache"
    run = cli(plugin_site, "run", "--methods", "centre", "--set",
              "methods.centre.normalise=false", "--cache-dir", str(cache), *FAST)
    assert run.returncode == 0, run.stderr
    (key, manifest), = [(k, m) for k, m in stored_sets(cache).items()]
    assert manifest["method"] == "centre"
    meta = json.loads((cache / "artifacts" / "distilled" / key / "distilled.json").read_text())
    assert meta["method"] == "centre"
    csv = cli(plugin_site, "table", "--format", "csv", "--cache-dir", str(cache))
    assert "centre," in csv.stdout


@pytest.mark.slow
def test_edited_plugin_code_and_recompute_are_not_served_from_the_cache(plugin_site,
                                                                        tmp_path):
    cache = tmp_path / "cache"
    args = ("run", "--methods", "centre", "--cache-dir", str(cache), "--format", "csv",
            *FAST)
    first = cli(plugin_site, *args)
    assert first.returncode == 0, first.stderr
    (old_key, old_manifest), = stored_sets(cache).items()
    again = cli(plugin_site, *args)
    assert again.stdout == first.stdout and stored_sets(cache) == {old_key: old_manifest}

    module = plugin_site / "kcenter_plugin.py"
    module.write_text(PLUGIN.replace("FIRST", "5"))  # the code changes: another first centre
    edited = cli(plugin_site, *args)
    assert edited.returncode == 0, edited.stderr
    sets = stored_sets(cache)
    (new_key,) = set(sets) - {old_key}  # a new set, keyed by the new source
    old = json.loads((cache / "artifacts" / "distilled" / old_key / "distilled.json")
                     .read_text())["extra"]["indices"]
    new = json.loads((cache / "artifacts" / "distilled" / new_key / "distilled.json")
                     .read_text())["extra"]["indices"]
    assert old[0] == 0 and new[0] == 5

    recompute = cli(plugin_site, *args, "--recompute", "methods.centre")
    assert recompute.returncode == 0, recompute.stderr
    replaced = stored_sets(cache)[new_key]
    assert replaced["created"] > sets[new_key]["created"]  # the same key, computed again
    assert recompute.stdout == edited.stdout  # the same code gives the same numbers
    encoders = [json.loads(p.read_text()) for p in
                (cache / "artifacts" / "encoder").glob("*/manifest.json")]
    assert any(e["built_from"] == {f"distilled/{new_key}": replaced["created"]}
               for e in encoders)  # the encoder was pre-trained on the new set
    bad = cli(plugin_site, *args, "--recompute", "methods.herding")
    assert bad.returncode == 2 and "--recompute 'methods.herding' is not a stage" in bad.stderr


def test_a_broken_plugin_is_one_warning_and_every_command_works(tmp_path):
    """A plug-in whose module raises on import (and one that is not a Method) is named in
    one ``warning:`` line each; ``list`` and ``table`` work and list the good ones."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_plugin.py").write_text("raise RuntimeError('needs a GPU driver')\n")
    (site / "not_a_method.py").write_text("Thing = 42\n")
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mkdt_bench.methods]\nbroken = broken_plugin:Bad\n"
                                           "number = not_a_method:Thing\n")
    listed = cli(site, "list")
    assert listed.returncode == 0, listed.stderr
    assert "broken" not in listed.stdout and "random" in listed.stdout
    assert listed.stderr.splitlines() == [
        "warning: method plug-in 'broken' (broken_plugin:Bad) is not used: RuntimeError: "
        "needs a GPU driver",
        "warning: method plug-in 'number' (not_a_method:Thing) is not used: TypeError: 42 is "
        "not a subclass of mkdt_bench.methods.base.Method"]
    from mkdt_bench.results import ResultStore

    ResultStore(tmp_path / "r.sqlite").close()
    table = cli(site, "table", "--results-db", str(tmp_path / "r.sqlite"))
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr

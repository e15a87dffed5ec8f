"""DistilledSet: round trip through a directory, validation of its contents."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError


def make(n=4, lr=0.25):
    return DistilledSet(images=torch.randn(n, 3, 8, 8), targets=torch.randn(n, 16), lr=lr,
                        source="digits", mean=(0.5,) * 3, std=(0.2,) * 3, method="test",
                        extra={"indices": list(range(n))})


def test_round_trip(tmp_path):
    ds = make()
    ds.save(tmp_path / "set")
    back = DistilledSet.load(tmp_path / "set")
    assert torch.equal(back.images, ds.images) and torch.equal(back.targets, ds.targets)
    assert back.lr == pytest.approx(0.25)
    assert back.method == "test" and back.extra == {"indices": [0, 1, 2, 3]}
    assert back.storage_bytes == 4 * 3 * 8 * 8 * 4 + 4 * 16 * 4 + 4


def test_without_lr(tmp_path):
    make(lr=None).save(tmp_path)
    assert DistilledSet.load(tmp_path).lr is None


def test_missing_tensor_file(tmp_path):
    make().save(tmp_path)
    (tmp_path / "targets.pt").unlink()
    with pytest.raises(UserError, match="has no targets.pt"):
        DistilledSet.load(tmp_path)


def test_invalid_contents():
    with pytest.raises(UserError, match="N x D"):
        DistilledSet(torch.randn(4, 1, 8, 8), torch.randn(3, 16), None, "s", (0,), (1,), "m")
    with pytest.raises(UserError, match="NaN"):
        DistilledSet(torch.full((2, 1, 4, 4), float("nan")), torch.randn(2, 3), None, "s", (0,),
                     (1,), "m")
    with pytest.raises(UserError, match="learning rate"):
        make(lr=-1.0)


class CodeRunner:
    """A pickle whose loading (by an unrestricted unpickler) creates the folder ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def saved(tmp_path: Path, **changes) -> Path:
    """A valid set's directory (1 x 8 x 8 images, an lr), ``changes`` applied: a file name
    to bytes, a tensor or another object saved with torch.save, or None to delete it; the
    key ``meta`` to a dict merged into (``None`` values deleting from) ``distilled.json``."""
    d = tmp_path / "set"
    DistilledSet(images=torch.randn(3, 1, 8, 8), targets=torch.randn(3, 4), lr=0.5,
                 source="digits", mean=(0.3,), std=(0.2,), method="m").save(d)
    meta = json.loads((d / "distilled.json").read_text())
    for key, value in changes.pop("meta", {}).items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    (d / "distilled.json").write_text(json.dumps(meta))
    for name, value in changes.items():
        path = d / name.replace("_", ".")
        if value is None:
            path.unlink()
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            torch.save(value, path)
    return d


# (case, changes to a valid set, text the one-line error must contain)
MALFORMED = [
    ("json not json", {"distilled_json": b"{not json"}, "is not readable JSON"),
    ("json a list", {"distilled_json": b"[1, 2]"}, "holds a JSON list, not an object"),
    ("json not utf-8", {"distilled_json": b"\xff\xfe\x00"}, "is not readable JSON"),
    ("json deeply nested", {"distilled_json": b"[" * 100000 + b"]" * 100000},
     "is not readable JSON"),
    ("no source", {"meta": {"source": None}}, "has no 'source'"),
    ("source a number", {"meta": {"source": 3}}, "'source' is a JSON int, expected a string"),
    ("mean a string", {"meta": {"mean": "0.3"}}, "'mean' is a JSON str, expected a list"),
    ("mean of strings", {"meta": {"mean": ["a"]}}, "expected a list of finite numbers"),
    ("mean infinite", {"meta": {"mean": [1e999]}}, "expected a list of finite numbers"),
    ("mean a huge integer", {"meta": {"mean": [10 ** 400]}}, "list of finite numbers"),
    ("mean of booleans", {"meta": {"mean": [True]}}, "list of finite numbers"),
    ("mean of two channels", {"meta": {"mean": [0.1, 0.2]}}, "mean/std have 2/1 values"),
    ("std zero", {"meta": {"std": [0]}}, "expected positive numbers"),
    ("extra a list", {"meta": {"extra": []}}, "'extra' is a JSON list, expected an object"),
    ("ssl recipe a string", {"meta": {"ssl_recipe": "simclr"}}, "expected an object or null"),
    ("ssl recipe of unknown keys", {"meta": {"ssl_recipe": {"x": 1}}}, "'ssl_recipe' has the"),
    ("declared count differs", {"meta": {"num_images": 30}}, "declares num_images 30"),
    ("declared lr but no lr.pt", {"lr_pt": None}, "declares the learning rate 0.5"),
    ("declared lr differs", {"lr_pt": torch.tensor(0.25)}, "lr.pt holds 0.25"),
    ("images a dict", {"images_pt": {"x": torch.zeros(1)}}, "holds a dict, not a tensor"),
    ("images integers", {"images_pt": torch.zeros(3, 1, 8, 8, dtype=torch.uint8)},
     "torch.uint8"),
    ("images complex", {"images_pt": torch.zeros(3, 1, 8, 8, dtype=torch.complex64)},
     "torch.complex64"),
    ("images sparse", {"images_pt": torch.zeros(3, 1, 8, 8).to_sparse()}, "sparse"),
    ("images 3-d", {"images_pt": torch.zeros(3, 8, 8)}, "shape (3, 8, 8)"),
    ("images not square", {"images_pt": torch.zeros(3, 1, 8, 6)}, "square"),
    ("images without pixels", {"images_pt": torch.zeros(3, 1, 0, 0)}, "N x C x H x W"),
    ("images truncated", {"images_pt": b"PK\x03\x04"}, "cannot be loaded"),
    ("images empty file", {"images_pt": b""}, "cannot be loaded"),
    ("targets 1-d", {"targets_pt": torch.zeros(3)}, "N x D"),
    ("targets too few", {"targets_pt": torch.zeros(2, 4)}, "N = 3 images"),
    ("targets NaN", {"targets_pt": torch.full((3, 4), float("nan"))}, "NaN"),
    ("lr a list", {"lr_pt": [0.5]}, "holds a list; expected one number"),
    ("lr of two values", {"lr_pt": torch.tensor([0.5, 0.5])}, "shape (2,)"),
    ("lr negative", {"lr_pt": torch.tensor(-0.5), "meta": {"lr": None}}, "-0.5"),
    ("lr boolean", {"lr_pt": torch.tensor(True)}, "torch.bool"),
    ("no images", {"images_pt": None}, "has no images.pt"),
]


@pytest.mark.parametrize("case, changes, expected", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_set_is_one_user_error_naming_it(tmp_path, case, changes, expected):
    directory = saved(tmp_path, **changes)
    with pytest.raises(UserError) as refused:
        DistilledSet.load(directory)
    message = str(refused.value)
    assert expected in message, message
    assert "\n" not in message and str(directory) in message


def test_a_code_running_pickle_is_refused_whatever_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for name in ("images_pt", "targets_pt", "lr_pt"):
        marker = tmp_path / f"ran-{name}"
        directory = saved(tmp_path / name, **{name: CodeRunner(marker)})
        with pytest.raises(UserError, match=rf"{name.replace('_', '.')}' cannot be loaded: "
                                            "refused"):
            DistilledSet.load(directory)
        assert not marker.exists()


def test_a_directory_that_is_a_file_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a directory"):
        DistilledSet.load(tmp_path / "f")


def test_loaded_images_are_float32_whatever_was_stored(tmp_path):
    directory = saved(tmp_path, images_pt=torch.zeros(3, 1, 8, 8, dtype=torch.float64))
    assert DistilledSet.load(directory).images.dtype == torch.float32


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.uint8,
                          torch.bool, torch.complex64])
TENSORS = st.builds(lambda shape, dtype: torch.ones(shape).to(dtype),
                    st.lists(st.integers(0, 4), max_size=5), DTYPES)


def _file(good):
    """A strategy for one file of a set: the good one, gone, another tensor, other data,
    bytes, the good file cut short, or a code-running pickle (a marker folder)."""
    return st.one_of(st.just(good), st.none(), TENSORS, JSON, st.binary(max_size=40),
                     st.integers(0, 400).map(lambda n: ("cut", n)), st.just("code"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=st.one_of(st.just(None), JSON,
                      st.dictionaries(st.sampled_from(["source", "mean", "std", "method", "extra",
                                                       "ssl_recipe", "lr", "num_images"]),
                                      JSON, max_size=4)),
       images=_file("good"), targets=_file("good"), lr=_file("good"))
def test_load_returns_a_valid_set_or_raises_a_user_error(meta, images, targets, lr):
    """Whatever a set directory holds, ``load`` gives a valid set or one UserError line,
    never another exception, and nothing in it runs."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "set"
        good = saved(Path(tmp))
        marker = Path(tmp) / "ran"
        if meta is not None:
            merged = {**json.loads((d / "distilled.json").read_text()), **meta} \
                if isinstance(meta, dict) else meta
            (d / "distilled.json").write_text(json.dumps(merged))
        for name, value in (("images.pt", images), ("targets.pt", targets), ("lr.pt", lr)):
            path = d / name
            if value == "good":
                continue
            if value is None:
                path.unlink()
            elif isinstance(value, tuple) and value[0] == "cut":
                path.write_bytes(path.read_bytes()[:value[1]])
            elif isinstance(value, bytes):
                path.write_bytes(value)
            else:
                torch.save(CodeRunner(marker) if value == "code" else value, path)
        try:
            loaded = DistilledSet.load(good)
        except UserError as e:
            assert "\n" not in str(e)
        else:
            assert loaded.images.dtype == torch.float32 and loaded.images.ndim == 4
            assert loaded.targets.shape[0] == len(loaded.images)
            assert len(loaded.mean) == len(loaded.std) == loaded.channels
            assert torch.isfinite(loaded.images).all() and torch.isfinite(loaded.targets).all()
        assert not marker.exists()

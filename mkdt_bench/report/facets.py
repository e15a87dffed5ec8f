"""Stored rows decoded into the facets a report groups and labels them by.

A *cell group* is the rows of one (source, teacher, budget, pre-training set, encoder,
evaluator, task, label fraction, set-up) over seeds (:data:`GROUP`): the set is a row label
(``mkdt[init=random]``) and its size in images, the set-up the options and code versions
that distinguish otherwise equal rows. Nothing of different groups is ever pooled;
everything downstream (tables, paired tests, plots) starts from :func:`row_facets`.

Each row's ``config`` and ``timings`` are read as the records the results store parsed
and upgraded (its ``provenance`` and ``costs`` columns: :class:`mkdt_bench.rows.Provenance`,
:class:`mkdt_bench.rows.Timings`); a reference row (``Method.reference``: the floor, the
low or the high mark) is known by what it records, not by its name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from mkdt_bench.errors import UserError
from mkdt_bench.pretraining.options import describe_pretrain
from mkdt_bench.results import METRICS
from mkdt_bench.rows import Provenance, SizeFacts, set_images, source_images
from mkdt_bench.teachers import describe_teacher
from mkdt_bench.variants import split_variant

#: What identifies a cell group besides the seed (see the module docstring).
GROUP = ["source", "teacher", "budget", "label", "set_images", "encoder", "evaluator", "task",
         "fraction", "setup"]

#: The set's and the evaluator's settings that can differ between rows of one label or
#: one evaluator name (a preset changed, a method's code edited): never pooled.
_SET_SETUP = ("method_options", "method_code", "pretrain", "train_pool", "files_sha256")
_EVAL_SETUP = ("evaluator_options", "evaluator_code")
_INITIAL_CODE = {"version": 1}


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return json.loads(value) if value else {}
    return dict(value or {})


def metric_name(metric: str) -> str:
    """How captions and axes name a :data:`METRICS` entry."""
    return {"accuracy": "top-1 accuracy", "mean_per_class_accuracy":
            "mean per-class accuracy"}[metric]


def short_task_name(task: str) -> str:
    """``imagefolder:/long/path/cifar10-jpeg`` -> ``imagefolder:cifar10-jpeg`` for headers."""
    if task.startswith("imagefolder:"):
        return "imagefolder:" + task.split(":", 1)[1].rstrip("/").rsplit("/", 1)[-1]
    return task


def _pretrain_text(config: dict[str, Any] | None) -> str:
    """:func:`describe_pretrain` of a row's ``pretrain`` config; ``""`` for rows without
    one (the teacher's)."""
    needed = ("epochs", "lr", "use_learned_lr", "momentum", "weight_decay", "batch_size")
    if not isinstance(config, dict) or not all(k in config for k in needed):
        return ""
    return describe_pretrain(config)


def _code_text(code: dict[str, Any]) -> str:
    if "version" in code:
        return f"v{code['version']}"
    return f"src:{str(code.get('source_sha256', ''))[:8]}"


def _setup_parts(record: Provenance, names: tuple[str, ...]) -> dict[str, str]:
    """The flat ``{name: text}`` of a row's settings among ``names`` (options one by one)."""
    out: dict[str, str] = {}
    for name in names:
        value = getattr(record, name)
        if name.endswith("_code"):
            out["code"] = _code_text(value or _INITIAL_CODE)
        elif name.endswith("_options") and isinstance(value, dict):
            out.update({k: json.dumps(v) if not isinstance(v, str) else v
                        for k, v in value.items()})
        elif name == "pretrain" and isinstance(value, dict):
            out.update({f"pretrain.{k}": json.dumps(v) for k, v in value.items()})
        elif name == "files_sha256" and value:
            out["files"] = hashlib.sha256(json.dumps(value, sort_keys=True).encode()
                                          ).hexdigest()[:8]
        elif value is not None and name == "train_pool":
            out["train_pool"] = str(value)
    return out


def differences(parts: pd.Series, by: pd.Series) -> pd.Series:
    """For each row, ``k=v,...`` of the settings (``parts``: JSON of a flat dict) in which
    it differs from other rows of its ``by`` group (empty where all rows agree)."""
    out = pd.Series("", index=parts.index)
    for _, idx in parts.groupby(by, sort=False).groups.items():
        group = [json.loads(p) for p in parts.loc[idx]]
        keys = sorted({k for p in group for k in p})
        differing = [k for k in keys if len({p.get(k) for p in group}) > 1]
        if differing:
            out.loc[idx] = [",".join(f"{k}={p.get(k, '-')}" for k in differing)
                            for p in group]
    return out


def row_facets(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The stored rows (:meth:`mkdt_bench.results.ResultStore.frame`) with the
    :data:`GROUP` columns, ``value`` (the metric) and
    ``reference`` (the row's :data:`mkdt_bench.rows.REFERENCES` role, None for a set that
    is compared)."""
    if metric not in METRICS:
        raise UserError(f"metric {metric!r} is not known; choose {', '.join(METRICS)}")
    df = frame.reset_index(drop=True).copy()
    provenance, timings = list(df["provenance"]), list(df["costs"])
    metrics = [_json(m) for m in df["metrics"]]
    df["value"] = (df["accuracy"].astype(float) if metric == "accuracy"
                   else pd.Series([m.get(metric) for m in metrics], dtype=float))
    df["source"] = df["dataset"]
    df["label"] = df["method"]
    df["method_name"] = [split_variant(m)[0] for m in df["method"]]
    df["variant"] = [split_variant(m)[1] for m in df["method"]]
    df["reference"] = [p.reference for p in provenance]
    df["teacher"] = [p.teacher or "" for p in provenance]
    df["teacher_desc"] = [describe_teacher(p.teacher_config or {}) for p in provenance]
    df["uses_labels"] = [p.uses_labels for p in provenance]
    df["pretrain_desc"] = [_pretrain_text(p.pretrain) for p in provenance]
    df["encoder"] = df["arch"]
    df["seed"] = df["seed"].astype(int)
    facts = [SizeFacts(d, m, int(b), p, t) for d, m, b, p, t in zip(
        df["dataset"], df["method"], df["budget"], provenance, timings)]
    sources = source_images(facts)
    df["source_images"] = pd.Series([np.nan if s is None else s for s in sources],
                                    index=df.index, dtype=float)
    df["set_images"] = pd.Series(set_images(facts, sources), index=df.index, dtype=int)
    df["set_parts"] = [json.dumps(_setup_parts(p, _SET_SETUP), sort_keys=True)
                       for p in provenance]
    df["eval_parts"] = [json.dumps(_setup_parts(p, _EVAL_SETUP), sort_keys=True)
                        for p in provenance]
    set_diff = differences(df["set_parts"], df["label"])
    eval_diff = differences(df["eval_parts"], df["evaluator"])
    df["setup"] = [";".join(p for p in (a, b) if p) for a, b in zip(set_diff, eval_diff)]
    df["set_setup"], df["eval_setup"] = set_diff, eval_diff
    df["timings_dict"] = [t.to_json() for t in timings]
    return df


def reference_labels(facets: pd.DataFrame, role: str) -> list[str]:
    """The row labels of :func:`row_facets` whose rows are the ``role`` reference
    (``"floor"``, ``"low"``, ``"high"``), in the order they are stored."""
    return list(dict.fromkeys(facets.loc[facets["reference"] == role, "label"]))


__all__ = ["GROUP", "differences", "metric_name", "reference_labels",
           "row_facets", "short_task_name"]

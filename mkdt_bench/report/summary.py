"""Stored rows as one tidy table: a row per cell group, with every number that a table,
CSV or figure shows and everything that says what it is.

A *cell group* is the rows of one (source, teacher, budget, pre-training set, encoder,
evaluator, task, label fraction, set-up) over seeds: the set is a row label
(``mkdt[init=random]``) and its size in images (``full`` holds the whole training pool,
``none`` nothing), the set-up the options and code versions that distinguish otherwise
equal rows. Nothing of different groups is ever pooled; everything downstream (tables,
paired tests, plots) starts from :func:`cell_groups` or :func:`row_facets`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS
from mkdt_bench.methods import METHODS
from mkdt_bench.pretraining import COMPATIBLE_DEFAULTS as PRETRAIN_COMPATIBLE
from mkdt_bench.pretraining import describe_pretrain
from mkdt_bench.registry import Registry
from mkdt_bench.results import FAILED, FLOOR_ROW, METRICS, MISSING, OK, TEACHER_ROW
from mkdt_bench.variants import split_variant

#: What identifies a cell group besides the seed (see the module docstring).
GROUP = ["source", "teacher", "budget", "label", "set_images", "encoder", "evaluator", "task",
         "fraction", "setup"]

#: The set's and the evaluator's settings that can differ between rows of one label or
#: one evaluator name (a preset changed, a method's code edited): never pooled.
_SET_SETUP = ("method_options", "method_code", "pretrain", "train_pool", "files_sha256")
_EVAL_SETUP = ("evaluator_options", "evaluator_code")
_INITIAL_CODE = {"version": 1}

#: The cost columns of a group (means over its rows' ``timings``).
COSTS = ("storage_bytes", "teacher_s", "teacher_peak_mib", "substages_s", "distill_s",
         "distill_peak_mib", "pretrain_steps", "pretrain_s", "evaluate_s")


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


def teacher_description(config: dict[str, Any]) -> str:
    """``SimCLR resnet10, 20 epochs on 1,437 images``, ``supervised (labelled proxy)
    convnet, 10 epochs`` or ``checkpoint x.pt (resnet18)`` from a row's ``teacher_config``."""
    if not config:
        return "no teacher"
    if config.get("checkpoint"):
        name = str(config["checkpoint"]).rstrip("/").rsplit("/", 1)[-1]
        return f"checkpoint {name} ({config.get('arch', '?')})"
    ssl = {"simclr": "SimCLR", "barlow_twins": "Barlow Twins"}.get(config.get("ssl"),
                                                                   config.get("ssl", "?"))
    if config.get("kind", "ssl") != "ssl":  # e.g. teacher.kind=supervised: never SSL
        ssl = f"{config['kind']} (labelled proxy)"
    images = config.get("train_images") or 0
    on = f" on {images:,} images" if images else ""
    return f"{ssl} {config.get('arch', '?')}, {config.get('epochs', '?')} epochs{on}"


def _pretrain_text(config: Any) -> str:
    """:func:`describe_pretrain` of a row's ``pretrain`` config; ``""`` for rows without
    one (the teacher's)."""
    needed = ("epochs", "lr", "use_learned_lr", "momentum", "weight_decay", "batch_size")
    if not isinstance(config, dict) or not all(k in config for k in needed):
        return ""
    return describe_pretrain({**PRETRAIN_COMPATIBLE, **config})


def _code_text(code: dict[str, Any]) -> str:
    if "version" in code:
        return f"v{code['version']}"
    return f"src:{str(code.get('source_sha256', ''))[:8]}"


def _setup_parts(config: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The flat ``{name: text}`` of a row's settings among ``names`` (options one by one)."""
    out: dict[str, str] = {}
    for name in names:
        value = config.get(name)
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


def _registered_defaults(registry: Registry, name: str) -> dict[str, Any]:
    """The ``compatible_defaults`` of the class registered as ``name`` (none if unknown or
    made by a prefix such as ``import:DIR``, whose factory would read its argument)."""
    if ":" in name or name not in registry:
        return {}
    return getattr(registry.get(name), "compatible_defaults", {})


def _compatible(config: dict[str, Any], method: str, evaluator: str) -> dict[str, Any]:
    """``config`` whose method, evaluator and pre-training options hold their compatible
    defaults where absent: a row stored before such an option existed ran with that value,
    so it is not set apart from the rows that record it."""
    out = dict(config)
    for field, defaults in (("method_options", _registered_defaults(METHODS, method)),
                            ("evaluator_options", _registered_defaults(EVALUATORS, evaluator)),
                            ("pretrain", PRETRAIN_COMPATIBLE)):
        if isinstance(out.get(field), dict):
            out[field] = {**defaults, **out[field]}
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
    """The stored rows with the :data:`GROUP` columns and ``value`` (the metric)."""
    if metric not in METRICS:
        raise UserError(f"metric {metric!r} is not known; choose {', '.join(METRICS)}")
    df = frame.reset_index(drop=True).copy()
    configs = [_json(c) for c in df["config"]]
    timings = [_json(t) for t in df["timings"]]
    metrics = [_json(m) for m in df["metrics"]]
    df["value"] = (df["accuracy"].astype(float) if metric == "accuracy"
                   else pd.Series([m.get(metric) for m in metrics], dtype=float))
    df["source"] = df["dataset"]
    df["label"] = df["method"]
    df["method_name"] = [split_variant(m)[0] for m in df["method"]]
    df["variant"] = [split_variant(m)[1] for m in df["method"]]
    df["teacher"] = [c.get("teacher", "") for c in configs]
    df["teacher_desc"] = [teacher_description(c.get("teacher_config", {})) for c in configs]
    df["uses_labels"] = [bool(c.get("uses_labels")) for c in configs]
    df["pretrain_desc"] = [_pretrain_text(c.get("pretrain")) for c in configs]
    df["encoder"] = df["arch"]
    df["seed"] = df["seed"].astype(int)
    df["source_images"] = _source_images(df, configs)
    df["set_images"] = _set_images(df, timings)
    filled = [_compatible(c, m, e) for c, m, e in zip(configs, df["method_name"],
                                                       df["evaluator"])]
    df["set_parts"] = [json.dumps(_setup_parts(c, _SET_SETUP), sort_keys=True)
                       for c in filled]
    df["eval_parts"] = [json.dumps(_setup_parts(c, _EVAL_SETUP), sort_keys=True)
                        for c in filled]
    set_diff = differences(df["set_parts"], df["label"])
    eval_diff = differences(df["eval_parts"], df["evaluator"])
    df["setup"] = [";".join(p for p in (a, b) if p) for a, b in zip(set_diff, eval_diff)]
    df["set_setup"], df["eval_setup"] = set_diff, eval_diff
    df["timings_dict"] = timings
    return df


def _source_images(df: pd.DataFrame, configs: list[dict[str, Any]]) -> pd.Series:
    """Images the methods distilled from (the training set or its ``run.train_pool``):
    recorded in rows since the budget percentage is shown; for older rows the pool, a
    ``full`` set's size, or the size a teacher on every training image reports."""
    recorded = []
    for c in configs:
        pool = c.get("train_pool") or 0
        recorded.append(c.get("source_images") or (pool if pool > 0 else np.nan))
    out = pd.Series(recorded, index=df.index, dtype=float)
    whole: dict[str, float] = {}
    for i, row in df.iterrows():
        config, timings = configs[i], _json(row["timings"])
        if row["method"] == "full" and not config.get("train_pool") and "set_images" in timings:
            whole.setdefault(row["dataset"], float(timings["set_images"]))
        teacher = config.get("teacher_config", {})
        if row["method"] == TEACHER_ROW and not teacher.get("train_images"):
            whole.setdefault(row["dataset"], float(row["budget"]))
    missing = out.isna()
    out[missing] = df.loc[missing, "dataset"].map(whole)
    return out


def _set_images(df: pd.DataFrame, timings: list[dict[str, Any]]) -> pd.Series:
    """Images of each row's pre-training set: recorded in its timings, else 0 for
    ``none``, the pool for ``full``, the teacher's training images for the teacher, the
    size other rows of its set record, and the budget as the last resort."""
    out = pd.Series([t.get("set_images", np.nan) for t in timings], index=df.index,
                    dtype=float)
    out[df["method"] == FLOOR_ROW] = 0
    teacher = df["method"] == TEACHER_ROW
    out[teacher] = df.loc[teacher, "budget"]
    full = (df["method"] == "full") & out.isna()
    out[full] = df.loc[full, "source_images"]
    keys = [df["label"], df["budget"], df["dataset"], df["teacher"]]
    out = out.fillna(out.groupby(keys).transform("max"))
    return out.fillna(df["budget"].astype(float)).astype(int)


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean (sample std, n - 1 degrees of freedom),
    clipped to [0, 100] (the metrics are percentages)."""
    from scipy.stats import t

    n = len(values)
    half = t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return (float(np.clip(values.mean() - half, 0, 100)),
            float(np.clip(values.mean() + half, 0, 100)))


def _status(group: pd.DataFrame) -> tuple[str, str]:
    """A group without a score: ``missing`` (with the absent path) or ``failed``."""
    missing = group.loc[group["status"] == MISSING, "error"]
    if len(missing):
        return MISSING, str(missing.iloc[-1]).removeprefix("missing: ")
    failed = group.loc[group["status"] == FAILED, "error"].dropna()
    return FAILED, str(failed.iloc[-1]) if len(failed) else ""


def cell_groups(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One row per cell group (:data:`GROUP`): ``mean``, ``std`` (population, as both
    papers report), ``n`` seeds, ``seeds``, ``ci_low``/``ci_high`` (95 % t-interval,
    clipped to [0, 100]; NaN below two seeds), ``status`` (ok, failed, missing) and
    ``note`` (the error or the missing path), plus the facets that describe it."""
    df = row_facets(frame, metric)
    out = []
    for key, group in df.groupby(GROUP, sort=False, dropna=False):
        ok = group[(group["status"] == OK) & group["value"].notna()]
        values = ok.drop_duplicates("seed", keep="last")["value"].to_numpy(float)
        first = group.iloc[0]
        record = dict(zip(GROUP, key))
        record.update(method=first["method_name"], variant=first["variant"],
                      source_images=first["source_images"], teacher_desc=first["teacher_desc"],
                      uses_labels=first["uses_labels"], pretrain_desc=first["pretrain_desc"],
                      set_setup=first["set_setup"], eval_setup=first["eval_setup"],
                      set_parts=first["set_parts"], eval_parts=first["eval_parts"],
                      metric=metric, n=len(values),
                      seeds=",".join(str(s) for s in sorted(set(ok["seed"]))))
        if len(values):
            lo, hi = confidence_interval(values) if len(values) > 1 else (np.nan, np.nan)
            record.update(mean=values.mean(), std=values.std(ddof=0), ci_low=lo, ci_high=hi,
                          status=OK, note="")
        else:
            status, note = _status(group)
            record.update(mean=np.nan, std=np.nan, ci_low=np.nan, ci_high=np.nan,
                          status=status, note=note)
        costs = pd.DataFrame(list(ok["timings_dict"]) or [{}])
        record.update({c: float(costs[c].mean()) if c in costs else np.nan for c in COSTS})
        out.append(record)
    groups = pd.DataFrame(out)
    if not groups.empty:
        groups["budget_percent"] = 100 * groups["budget"] / groups["source_images"]
    return groups


#: Where two cell groups may be paired seed by seed: everything of :data:`GROUP` but the
#: set (its label, size and set-up).
_POSITION = ["source", "teacher", "budget", "encoder", "evaluator", "task", "fraction",
             "eval_setup"]


def _ok_facets(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    return row_facets(frame[frame["status"] == OK], metric).dropna(subset=["value"])


def _reference(df: pd.DataFrame, label: str, role: str) -> pd.Series:
    """``label``'s value per (position, seed): the seed-by-seed reference of ``role``."""
    if label not in set(df["label"]):
        raise UserError(f"no results for the {role} {label!r}; methods stored: "
                        f"{', '.join(sorted(set(df['label'])))}")
    rows = df[df["label"] == label]
    if rows.duplicated([*_POSITION, "seed"]).any():
        raise UserError(f"the {role} {label!r} has several set-ups at one position (options "
                        "or code changed between runs); choose one with --methods or a "
                        "separate --results-db")
    return rows.set_index([*_POSITION, "seed"])["value"]


def _groups_by_seed(df: pd.DataFrame, skip: list[str]) -> Iterator[tuple[tuple, pd.Series]]:
    """(GROUP key, values indexed by position and seed) of each group not in ``skip``."""
    for key, group in df[~df["label"].isin([*skip, TEACHER_ROW])].groupby(
            GROUP, sort=False, dropna=False):
        yield key, group.drop_duplicates("seed", keep="last").set_index(
            [*_POSITION, "seed"])["value"]


def paired_differences(frame: pd.DataFrame, baseline: str,
                       metric: str = "accuracy") -> pd.DataFrame:
    """Each cell group's per-seed difference from ``baseline``'s group at the same
    (source, teacher, budget, encoder, evaluator, task, fraction): columns ``baseline``,
    ``diff_mean`` (points), ``diff_std``, ``n_pairs`` and ``p_value`` (two-sided paired
    t-test, ``scipy.stats.ttest_rel``; NaN below two pairs or for identical differences),
    indexed by :data:`GROUP`. The baseline's own groups and the teacher have none."""
    from scipy.stats import ttest_rel

    df = _ok_facets(frame, metric)
    base = _reference(df, baseline, "paired baseline")
    out = []
    for key, values in _groups_by_seed(df, [baseline]):
        common = values.index.intersection(base.index)
        a, b = values.loc[common].to_numpy(float), base.loc[common].to_numpy(float)
        diff = a - b
        p = np.nan
        if len(diff) >= 2 and diff.std() > 0:
            p = float(ttest_rel(a, b).pvalue)
        out.append({**dict(zip(GROUP, key)), "baseline": baseline,
                    "diff_mean": diff.mean() if len(diff) else np.nan,
                    "diff_std": diff.std(ddof=0) if len(diff) else np.nan,
                    "n_pairs": len(diff), "p_value": p})
    return pd.DataFrame(out, columns=[*GROUP, "baseline", "diff_mean", "diff_std", "n_pairs",
                                      "p_value"])


def fieller_interval(gain: np.ndarray, gap: np.ndarray,
                     level: float = 0.95) -> tuple[float, float]:
    """Fieller's interval for ``mean(gain) / mean(gap)`` from paired samples (sample
    covariance, n - 1 degrees of freedom); ``(nan, nan)`` where the interval is unbounded,
    i.e. ``mean(gap)`` is not separated from zero at ``level``. Fieller (1954), J. R. Stat.
    Soc. B 16, 175-185."""
    from scipy.stats import t

    n = len(gain)
    if n < 2:
        return (np.nan, np.nan)
    q = t.ppf(0.5 + level / 2, n - 1) ** 2
    cov = np.cov(np.vstack([gain, gap]), ddof=1) / n
    a, b = gain.mean(), gap.mean()
    quad = b * b - q * cov[1, 1]
    if quad <= 0:
        return (np.nan, np.nan)
    half = b * a - q * cov[0, 1]
    root = np.sqrt(max(half * half - quad * (a * a - q * cov[0, 0]), 0.0))
    return (float((half - root) / quad), float((half + root) / quad))


def relative_scores(frame: pd.DataFrame, low: str = "random", high: str = "full",
                    metric: str = "accuracy") -> pd.DataFrame:
    """Each cell group's gain over ``low`` as a share of the ``high`` - ``low`` gap at the
    same position (DD-Ranking style: 0 % = ``low``, 100 % = ``high``), over the seeds the
    three share: ``relative`` = 100 mean(set - low) / mean(high - low), its 95 % Fieller
    interval ``relative_low``/``relative_high`` (NaN where the gap is not separated from
    zero or below two seeds) and ``relative_pairs``; indexed by :data:`GROUP`. The teacher
    has none; ``low`` and ``high`` get 0 and 100 on their shared seeds."""
    df = _ok_facets(frame, metric)
    base = _reference(df, low, "relative score's lower reference")
    top = _reference(df, high, "relative score's upper reference")
    out = []
    for key, values in _groups_by_seed(df, []):
        common = values.index.intersection(base.index).intersection(top.index)
        gain = values.loc[common].to_numpy(float) - base.loc[common].to_numpy(float)
        gap = top.loc[common].to_numpy(float) - base.loc[common].to_numpy(float)
        score, lo, hi = np.nan, np.nan, np.nan
        if len(common) and gap.mean() != 0:
            score = 100 * gain.mean() / gap.mean()
            lo, hi = (100 * v for v in fieller_interval(gain, gap))
        out.append({**dict(zip(GROUP, key)), "relative": score, "relative_low": lo,
                    "relative_high": hi, "relative_pairs": len(common)})
    return pd.DataFrame(out, columns=[*GROUP, "relative", "relative_low", "relative_high",
                                      "relative_pairs"])


def significantly_best(facets: pd.DataFrame, candidates: pd.DataFrame,
                       alpha: float = 0.05) -> set[tuple]:
    """Keys (:data:`GROUP`) of the groups among ``candidates`` (cell groups of one column)
    whose mean is the highest and whose per-seed values (``facets``: :func:`row_facets`)
    differ from the runner-up's by a paired t-test at ``alpha`` (over the seeds both have;
    no mark below two pairs)."""
    from scipy.stats import ttest_rel

    ranked = candidates[candidates["status"] == OK].sort_values("mean", ascending=False)
    if len(ranked) < 2:
        return set()
    df = facets[(facets["status"] == OK) & facets["value"].notna()]
    best, second = (tuple(ranked.iloc[i][GROUP]) for i in (0, 1))

    def seeds(key: tuple) -> pd.Series:
        mask = np.logical_and.reduce([(df[c] == v) for c, v in zip(GROUP, key)])
        return df[mask].drop_duplicates("seed", keep="last").set_index("seed")["value"]

    a, b = seeds(best), seeds(second)
    common = a.index.intersection(b.index)
    if len(common) < 2 or (a[common] - b[common]).std() == 0:
        return set()
    if ttest_rel(a[common], b[common]).pvalue < alpha and ranked.iloc[0]["mean"] > \
            ranked.iloc[1]["mean"]:
        return {best}
    return set()


def pretraining_note(frame: pd.DataFrame) -> str:
    """One line: whether every set of the same size got the same number of pre-training
    steps (the runner applies one pre-training config to all methods of a grid; sets of
    another size, such as ``full``, get proportionally more or fewer)."""
    df = frame[(frame["status"] == OK) & ~frame["method"].isin([TEACHER_ROW, FLOOR_ROW])]
    if df.empty:
        return ""
    df = row_facets(df)
    df["steps"] = [t.get("pretrain_steps") for t in df["timings_dict"]]
    df = df.dropna(subset=["steps"])
    groups = sorted(df.groupby("set_images"), key=lambda kv: kv[0])
    unequal = [f"{int(n):,} images: {sorted(set(g['steps'].astype(int)))}"
               for n, g in groups if g["steps"].nunique() > 1]
    if unequal:
        return "pre-training steps differ between sets of one size: " + "; ".join(unequal)
    return "equal pre-training steps for every set of one size: " + ", ".join(
        f"{int(g['steps'].iloc[0]):,} steps for {int(n):,} images" for n, g in groups)


__all__ = ["COSTS", "GROUP", "cell_groups", "confidence_interval", "differences",
           "fieller_interval", "metric_name", "paired_differences", "pretraining_note",
           "relative_scores", "row_facets", "short_task_name", "significantly_best",
           "teacher_description"]

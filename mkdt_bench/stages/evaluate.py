"""Evaluation stage: an encoder (pre-trained on a set, or the teacher:
:func:`~mkdt_bench.stages.pretrain.load_encoder`) scored by each downstream cell (evaluator,
task, label fraction) into result rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from mkdt_bench.cache import ArtifactCache, config_hash
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import create_evaluator
from mkdt_bench.results import MISSING, ResultRow
from mkdt_bench.rows import Provenance, Timings
from mkdt_bench.stages.accounting import stage_costs
from mkdt_bench.stages.env import Env, cached_dataset, error_text, package_versions, prepare_process
from mkdt_bench.stages.pretrain import PretrainUnit, load_encoder
from mkdt_bench.stages.teacher import TeacherRef


@dataclass(frozen=True)
class Cell:
    """One result row to compute: (evaluator, task, label fraction) of an encoder.

    ``image_size``: the resolution resizing task loaders bring the task to (the source's);
    ``missing``: the absent file of a task whose data are not there (an ``n/a`` row);
    ``code``: the evaluator's code version (:mod:`mkdt_bench.code_version`), recorded.
    """

    key: str
    evaluator: str
    options: dict[str, Any]
    task: str
    fraction: float
    image_size: int | None = None
    missing: str = ""
    code: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalUnit:
    """The missing cells of one encoder (``encoder``: pre-trained on a set, or the teacher)
    in the rows of ``method`` (a row label) at ``budget`` images on ``dataset``."""

    method: str
    seed: int
    budget: int
    dataset: str
    encoder: PretrainUnit | TeacherRef
    cells: tuple[Cell, ...]
    row_config: Provenance = field(default_factory=Provenance)
    upstream_error: str | None = None

    @property
    def arch(self) -> str:
        """The encoder's architecture."""
        return self.encoder.arch


def run_eval(unit: EvalUnit, env: Env) -> list[ResultRow]:
    """The unit's result rows; a failure becomes failed rows carrying the error.

    Rows record the resolved device (``cuda:0``, ``cpu``) and, with the package versions,
    the device's name and the precision settings in force (``Env.settings``). Rows that
    compute nothing (missing data, a failed upstream unit) are made without touching the
    device (the planner's process makes them, which may have none)."""
    versions = package_versions()
    device = env.device
    rows: list[ResultRow] = []

    def row(cell: Cell, accuracy: float | None, timings: Timings,
            metrics: dict[str, float], error: str | None = None,
            status: str = "failed") -> ResultRow:
        config = replace(unit.row_config, evaluator_options=cell.options,
                         evaluator_code=cell.code,
                         built_from=ArtifactCache(env.cache_dir).stamps(
                             unit.row_config.artifact_names)).to_json()
        return ResultRow(cell_key=cell.key, dataset=unit.dataset, method=unit.method,
                         budget=unit.budget, arch=unit.arch, evaluator=cell.evaluator,
                         task=cell.task, fraction=cell.fraction, seed=unit.seed,
                         accuracy=accuracy, status=status if error else "ok", error=error,
                         config_hash=config_hash(config), config=config, versions=versions,
                         device=str(device), timings=timings.to_json(), metrics=metrics)

    rows += [row(c, None, Timings(), {}, f"missing: {c.missing}", MISSING) for c in unit.cells
             if c.missing]
    present = [c for c in unit.cells if not c.missing]
    if unit.upstream_error:
        return rows + [row(c, None, Timings(), {}, unit.upstream_error) for c in present]
    if not present:
        return rows
    device = prepare_process(env)
    versions = {**versions, **env.settings()}
    try:
        encoder, source_facts = load_encoder(unit.encoder, env)
        timings = {**stage_costs(ArtifactCache(env.cache_dir), unit.row_config.artifact_names),
                   **source_facts}
        for cell in present:
            task = cached_dataset(cell.task, env.data_root, env.cache_dir, cell.image_size)
            start = time.perf_counter()
            metrics = create_evaluator(cell.evaluator, **cell.options).evaluate(
                encoder, task, cell.fraction, unit.seed, device)
            cell_timings = Timings(**timings, evaluate_s=time.perf_counter() - start)
            rows.append(row(cell, metrics.pop("accuracy"), cell_timings, metrics))
    except (UserError, RuntimeError, ValueError) as e:
        done = {r.cell_key for r in rows}
        rows += [row(c, None, Timings(), {}, error_text(e)) for c in present
                 if c.key not in done]
    return rows

"""The contract kit (``mkdt_bench.testing``) over every registered method and evaluator, so
that no plug-in escapes it, and deliberately broken plug-ins that it must catch."""

from __future__ import annotations

import pytest
import torch

from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS, Evaluator
from mkdt_bench.methods import METHODS, Method
from mkdt_bench.options import Interval, Opt
from mkdt_bench.testing import (
    ContractError,
    check_evaluator,
    check_method,
    evaluator_checks,
    method_checks,
)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_passes_the_kit(name, tmp_path):
    check_method(METHODS.get(name), tmp_path)


@pytest.mark.parametrize("name", EVALUATORS.names())
def test_every_registered_evaluator_passes_the_kit(name, tmp_path):
    check_evaluator(EVALUATORS.get(name), tmp_path)


def test_the_checks_are_named_and_resume_is_checked_where_declared(tmp_path):
    names = [c.name for c in method_checks(METHODS.get("mkdt"), tmp_path)]
    assert names == ["options validated", "config round-trips", "code change changes the key",
                     "declarations", "picklable", "budget and shapes", "labels only when declared",
                     "deterministic per seed", "resumes after a kill"]
    assert "resumes after a kill" not in [c.name for c in
                                          method_checks(METHODS.get("random"), tmp_path)]
    assert [c.name for c in evaluator_checks(EVALUATORS.get("knn"), tmp_path)][-3:] == [
        "scores", "deterministic per seed", "encoder untouched"]


class IgnoresBudget(Method):
    def distill(self, ctx):
        return self.make_set(ctx, ctx.images[: ctx.budget + 1], ctx.targets[: ctx.budget + 1])


class Nondeterministic(Method):
    def distill(self, ctx):
        idx = torch.randperm(len(ctx.images))[: ctx.budget]  # the global generator
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx])


class ReadsLabelsUndeclared(Method):
    def distill(self, ctx):
        idx = ctx.labels.argsort()[: ctx.budget]
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx])


class SeededButDeclaredUnseeded(Method):
    seeded = False

    def distill(self, ctx):
        idx = torch.randperm(len(ctx.images), generator=torch.Generator().manual_seed(ctx.seed))
        return self.make_set(ctx, ctx.images[idx[: ctx.budget]], ctx.targets[idx[: ctx.budget]])


class SkipsValidation(Method):
    options = {"steps": Opt(3, Interval(int, 1, None), "steps")}

    def __init__(self, **options):
        self.config = {**self.defaults, **options}

    def distill(self, ctx):
        return self.make_set(ctx, ctx.images[: ctx.budget], ctx.targets[: ctx.budget])


class NeverSnapshots(Method):
    resumable = True

    def distill(self, ctx):
        return self.make_set(ctx, ctx.images[: ctx.budget], ctx.targets[: ctx.budget])


class EngineOptionUndeclared(IgnoresBudget):
    engine_options = frozenset({"unrol"})


class BadTestOptions(Method):
    options = {"steps": Opt(3, Interval(int, 1, None), "steps")}
    test_options = {"steps": 0}


@pytest.mark.parametrize("cls, message", [
    (IgnoresBudget, "method 'IgnoresBudget' breaks 'budget and shapes': 7 images where "
                    "set_size(6, 60) says 6"),
    (Nondeterministic, "method 'Nondeterministic' breaks 'deterministic per seed': two runs "
                       "with seed 0 give different sets"),
    (ReadsLabelsUndeclared, "method 'ReadsLabelsUndeclared' breaks 'labels only when "
                            "declared': it fails without the training labels"),
    (SeededButDeclaredUnseeded, "breaks 'deterministic per seed': seeds 0 and 1 give "
                                "different sets, but it declares seeded = False"),
    (SkipsValidation, "breaks 'options validated': no_such_option=1 is outside what its "
                      "declaration allows but is accepted"),
    (NeverSnapshots, "breaks 'resumes after a kill': it declares resumable = True but "
                     "rewrote no snapshot"),
    (EngineOptionUndeclared, "breaks 'declarations': engine_options names 'unrol', which is "
                             "not one of its options"),
    (BadTestOptions, "breaks 'options validated': its test_options are refused: method "
                     "'BadTestOptions': steps=0 must be an int in [1, inf)"),
])
def test_a_broken_method_fails_the_kit_naming_the_contract(cls, message, tmp_path):
    with pytest.raises(ContractError) as caught:
        check_method(cls, tmp_path)
    assert message in str(caught.value)


def test_a_method_that_cannot_be_pickled_fails_the_kit(tmp_path):
    class Local(Method):  # a class inside a function cannot reach a worker process
        def distill(self, ctx):
            return self.make_set(ctx, ctx.images[: ctx.budget], ctx.targets[: ctx.budget])

    with pytest.raises(ContractError, match="breaks 'picklable': it cannot be sent to a "
                                            "worker process"):
        check_method(Local, tmp_path)


class TrainsTheGivenEncoder(Evaluator):
    def evaluate(self, encoder, task, fraction, seed, device):
        with torch.no_grad():
            next(encoder.parameters()).add_(1.0)
        return {"accuracy": 50.0}


class ScoresAFraction(Evaluator):
    def evaluate(self, encoder, task, fraction, seed, device):
        return {"accuracy": 250.0}


class RefusesEverything(Evaluator):
    def evaluate(self, encoder, task, fraction, seed, device):
        raise UserError("no")


@pytest.mark.parametrize("cls, message", [
    (TrainsTheGivenEncoder, "evaluator 'TrainsTheGivenEncoder' breaks 'encoder untouched': "
                            "evaluate changed the given encoder's"),
    (ScoresAFraction, "breaks 'scores': accuracy=250.0 is not a percentage"),
    (RefusesEverything, "breaks 'scores': evaluate fails on the tiny problem: no"),
])
def test_a_broken_evaluator_fails_the_kit_naming_the_contract(cls, message, tmp_path):
    with pytest.raises(ContractError) as caught:
        check_evaluator(cls, tmp_path)
    assert message in str(caught.value)

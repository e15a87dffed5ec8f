"""The benchmark scripts run and print one JSON object (tiny sizes; no timing asserted);
the reference-style baseline computes the engine's meta-gradient; the GPU check runs end to
end on the CUDA stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mkdt_bench.methods._unroll as unroll
from mkdt_bench.models import create_model

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


TINY_MKDT = ["--images", "10", "--syn-steps", "2", "--batch-syn", "5", "--width", "8"]


def _run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("script, args, key", [
    ("distill_speed.py", [*TINY_MKDT, "--iterations", "1"], "seconds_per_iteration"),
    ("distill_speed.py", [*TINY_MKDT, "--iterations", "1", "--engine", "checkpoint"],
     "seconds_per_iteration"),
    ("krrst_speed.py", ["--images", "20", "--real-batch", "32", "--width", "8", "--teacher",
                        "convnet:width=8", "--steps", "1"], "seconds_per_outer_step"),
])
def test_prints_json(script, args, key):
    result = _run(script, *args)
    assert result[key] > 0 and result["memory_measure"] == "ru_maxrss_growth"


@pytest.mark.slow
@pytest.mark.parametrize("heap", ["default", "retained"])
def test_teacher_speed_times_the_supervised_teacher_in_either_heap(heap):
    result = _run("teacher_speed.py", "--kind", "supervised", "--arch", "convnet:width=8",
                  "--images", "64", "--batch", "32", "--heap", heap)
    assert (result["kind"], result["heap"], result["batches"]) == ("supervised", heap, 2)
    assert result["seconds_per_batch"] > 0 and result["minor_page_faults"] > 0


@pytest.mark.slow
def test_krrst_teacher_views_round_robin_times_the_precompute_apart():
    result = _run("krrst_speed.py", "--images", "20", "--real-batch", "32", "--width", "8",
                  "--teacher", "convnet:width=8", "--steps", "1", "--rounds", "2",
                  "--teacher-views", "0,2", "--real-images", "48")
    assert set(result["seconds_per_outer_step"]) == {"0", "2"}
    assert result["time_ratio_to_first"]["0"] == 1.0
    assert set(result["precompute_seconds"]) == {"2"} and result["precompute_seconds"]["2"] > 0
    assert result["teacher_views"] == [0, 2] and result["real_images"] == 48


@pytest.mark.slow
def test_round_robin_engines_and_flop_rate():
    result = _run("distill_speed.py", *TINY_MKDT, "--iterations", "1", "--warmup", "0",
                  "--engine", "baseline,full,checkpoint")
    assert set(result["seconds_per_iteration"]) == {"baseline", "full", "checkpoint"}
    assert result["time_ratio_to_baseline"]["baseline"] == 1.0
    assert result["gflop_per_iteration"] > 0 and result["gflops"]["full"] > 0


@pytest.mark.slow
def test_experts_half_and_precision_scripts():
    experts = _run("experts_speed.py", "--images", "32", "--batch", "16", "--experts", "2",
                   "--groups", "2", "--width", "4", "--resolution", "8", "--dim", "4")
    assert experts["group_2"]["max_abs_difference"] < 1e-4
    half = _run("half_snapshots.py", "--images", "32", "--epochs", "3", "--syn-images", "10",
                "--syn-steps", "2", "--batch-syn", "5", "--width", "4", "--dim", "4",
                "--resolution", "8")
    assert half["bytes_per_expert_float16"] * 2 == half["bytes_per_expert_float32"]
    assert half["starts"]["0"]["loss_relative_difference"] < 1e-2
    precision = _run("precision_check.py", *TINY_MKDT)
    assert precision["fp32"]["cosine_to_fp32"] == 1.0
    assert precision["fp32"]["settings"]["cudnn_conv_fp32_precision"] == "ieee"  # strict
    assert -1 <= precision["bf16"]["cosine_to_fp32"] <= 1
    assert "tf32" not in precision and "default" not in precision  # CUDA settings


@pytest.mark.slow
def test_gpu_check_runs_on_the_cuda_standin():
    """``DEVICE=meta SMOKE=1 bash benchmarks/gpu_check.sh``: every part, shapes only."""
    env = dict(os.environ, DEVICE="meta", SMOKE="1", PYTHON=sys.executable,
               OMP_NUM_THREADS="1")
    out = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh")], capture_output=True,
                         text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    parts = {"mkdt_full", "mkdt_checkpoint", "experts", "krrst", "teacher", "precision"}
    assert parts <= set(report) and report["device"] == "meta"
    assert all(report[part]["device"] == "meta" for part in parts)
    assert report["mkdt_full"]["engine"] == "full" and report["mkdt_full"]["num_params"] > 0
    assert report["mkdt_checkpoint"]["auto_unroll"] == "checkpoint"  # memory unknown
    assert report["experts"]["group_2"]["ratio_to_sequential"] > 0
    assert report["teacher"]["batches"] == 2 and report["teacher"]["epoch_images"] == 50_000
    assert {"fp32", "default", "tf32", "bf16"} <= set(report["precision"])


def test_baseline_gradients_equal_the_engine():
    """The reference-style MTT unroll computes the same meta-gradient as the engine."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _mtt_baseline import ReparamNet, baseline_loss
    finally:
        sys.path.remove(str(BENCHMARKS))
    torch.manual_seed(0)
    model = create_model("convnet", in_channels=1, image_size=8, out_dim=6, width=8)
    net = unroll.FlatNet(model)
    start = net.flatten(model)
    g = torch.Generator().manual_seed(1)
    target = start + 0.05 * torch.randn(net.num_params, generator=g)
    data = [torch.randn(10, 1, 8, 8, generator=g), torch.randn(10, 6, generator=g),
            torch.tensor(0.1)]
    batches = unroll.syn_batches(10, 4, 5, g)
    ref = [t.clone().requires_grad_(True) for t in data]
    baseline_loss(ReparamNet(model), start, target, *ref, batches).backward()
    ours = [t.clone().requires_grad_(True) for t in data]
    unroll.meta_step(net, start, target, *ours, batches, "full")[1]()
    for want, got in zip(ref, ours):
        assert want.grad.abs().sum() > 0
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(not os.environ.get("MKDT_REFERENCE"),
                    reason="set MKDT_REFERENCE to a checkout of jiayini1119/MKDT@eaf200e")
def test_distill_speed_times_the_official_code():
    """``--reference DIR`` runs the official ``distill.py`` on the same problem in its own
    process and reports the engine's time and memory as ratios to it."""
    result = _run("distill_speed.py", "--images", "10", "--syn-steps", "2", "--batch-syn",
                  "5", "--width", "32", "--iterations", "1", "--engine", "full",
                  "--reference", os.environ["MKDT_REFERENCE"])
    official = result["official"]
    assert official["model"] == "ConvNetW32" and official["seconds_per_iteration"] > 0
    assert official["reference_commit"].startswith("eaf200e")
    assert result["time_ratio_to_official"] > 0


@pytest.mark.slow
def test_teacher_validation_probes_on_held_out_training_images():
    result = _run("teacher_validation.py", "--arch", "convnet:width=8,depth=2", "--epochs", "1",
                  "--train", "200", "--seeds", "2")
    assert (result["train_images"], result["validation_images"]) == (200, 1237)
    for key in ("accuracy@1%", "accuracy@5%"):
        mean, std = result[key]
        assert 0 <= mean <= 100 and std >= 0
    assert result["seconds"] > 0

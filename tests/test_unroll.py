"""The checkpointed unroll gives the full unroll's loss and gradients (spec ``mkdt.md`` §4);
the retained heap of the CPU inner loop keeps freed memory only while it is on."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import mkdt_bench.methods._unroll as unroll
from mkdt_bench import allocator
from mkdt_bench.errors import UserError
from mkdt_bench.models import create_model


def _net() -> unroll.FlatNet:
    torch.manual_seed(0)
    return unroll.FlatNet(create_model("convnet", in_channels=1, image_size=8, out_dim=6, width=8))


def _grads(net, mode, steps=7, batch=4, prior=None):
    """Loss and (images, targets, lr) gradients; 10 images so indices repeat across steps."""
    start = net.flatten(net.module)
    g = torch.Generator().manual_seed(1)
    target = start + 0.05 * torch.randn(net.num_params, generator=g)
    images = torch.randn(10, 1, 8, 8, generator=g, requires_grad=True)
    targets = torch.randn(10, 6, generator=g, requires_grad=True)
    lr = torch.tensor(0.1, requires_grad=True)
    leaves = (images, targets, lr)
    if prior is not None:
        for leaf in leaves:
            leaf.grad = torch.full_like(leaf, prior)
    batches = unroll.syn_batches(10, batch, steps, g)
    loss, backward = unroll.meta_step(net, start, target, *leaves, batches, mode)
    assert not loss.requires_grad
    backward()
    return loss, [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("prior", [None, 0.5])
def test_checkpoint_gradients_equal_full(prior):
    net = _net()
    loss_full, grads_full = _grads(net, "full", prior=prior)
    loss_ckpt, grads_ckpt = _grads(net, "checkpoint", prior=prior)
    torch.testing.assert_close(loss_ckpt, loss_full, rtol=1e-6, atol=0)
    for got, want in zip(grads_ckpt, grads_full):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_checkpoint_single_step():
    net = _net()
    _, full = _grads(net, "full", steps=1)
    _, ckpt = _grads(net, "checkpoint", steps=1)
    for got, want in zip(ckpt, full):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_auto_follows_the_memory_budget():
    net = _net()
    images = torch.zeros(1, 1, 8, 8)
    per_image = unroll.activation_floats(net.module, images)
    # conv 8x8x8, norm, relu: 3 x 512; pool 128; then 3 x 128 + 32, 3 x 32 + 8, flatten 8, head 6
    assert per_image == 3 * 512 + 128 + 3 * 128 + 32 + 3 * 32 + 8 + 8 + 6
    need = unroll.full_unroll_bytes(net.module, images, batch=4, steps=5)
    assert need == int(unroll.GRAPH_BYTES_PER_ACTIVATION * per_image * 4 * 5)
    assert unroll.full_unroll_bytes(net.module, images, batch=8, steps=10) == need * 4
    assert unroll.choose_unroll("auto", net.module, images, 4, 5, need) == "full"
    assert unroll.choose_unroll("auto", net.module, images, 4, 5, need - 1) == "checkpoint"
    assert unroll.choose_unroll("auto", net.module, images, 4, 5, None) == "checkpoint"
    assert unroll.choose_unroll("full", net.module, images, 4, 5, need // 2) == "full"
    with pytest.raises(UserError, match="unroll='fast'.*'checkpoint'"):
        unroll.choose_unroll("fast", net.module, images, 4, 5, 2**30)


HEAP_HELPERS = """
import os
import torch
from mkdt_bench import allocator

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def freed_block_stays(mib=64):
    block = torch.ones(mib * 2**18)  # written: resident
    with_block = resident_mib()
    del block
    return with_block - resident_mib() < mib / 2
"""

RETAINED_SCRIPT = HEAP_HELPERS + """
out = [freed_block_stays()]  # glibc default: mmap, munmap on free
before = resident_mib()
with allocator.retained_heap():
    out.append(freed_block_stays())
    out.append(freed_block_stays(160))
    out.append(resident_mib() - before > 150)
out.append(resident_mib() - before < 32)  # on exit the free memory is given back
print(out)
"""


GLIBC_ONLY = pytest.mark.skipif(
    not sys.platform.startswith("linux") or allocator._libc() is None, reason="glibc only")


def _printed_by(script: str) -> list[str]:
    """What ``script`` prints, run in a fresh process: the heap of a test run may already
    hold free blocks."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@GLIBC_ONLY
def test_retained_heap_keeps_freed_blocks_until_exit():
    assert _printed_by(RETAINED_SCRIPT) == "[False, True, True, True, True]".split()


NESTED_SCRIPT = HEAP_HELPERS + """
out = []
with allocator.retained_heap():
    with allocator.retained_heap():
        out.append(allocator.retained())
    out.append(allocator.retained())
    out.append(freed_block_stays())  # the inner block's exit left the outer one's settings
out.append(allocator.retained())
out.append(freed_block_stays())  # glibc's defaults again
print(out)
"""


@GLIBC_ONLY
def test_retained_heap_blocks_nest():
    assert _printed_by(NESTED_SCRIPT) == "[True, True, True, False, False]".split()


def _in_retained_heap(unit, env):
    return allocator.retained()


@GLIBC_ONLY
def test_every_cpu_unit_runs_in_the_retained_heap(tmp_path):
    from dataclasses import replace

    from mkdt_bench.pipeline.executors import InProcessExecutor, map_units
    from mkdt_bench.stages.env import Env

    env = Env(cache_dir=str(tmp_path), data_root="", device="cpu")
    executor = InProcessExecutor()
    assert [r for _, r in map_units(executor, _in_retained_heap, [1, 2], env)] == [True, True]
    on_gpu = replace(env, device="cuda:0")  # not run on a GPU: the flag alone is read
    assert [r for _, r in map_units(executor, _in_retained_heap, [1], on_gpu)] == [False]
    assert not allocator.retained()

"""``mkdt-bench convert``: a reference repository's distilled set as a DistilledSet directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mkdt_bench.cli.common import add_store_args, creatable, paths
from mkdt_bench.errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser("convert", help="read a reference repository's distilled set "
                                       "into a DistilledSet directory")
    p.add_argument("kind", choices=["mkdt", "krrst"], help="mkdt: images_K/labels_K/"
                   "synlr_K.pt; krrst: x_syn.pt (or x_syn_final.pt) and y_syn.pt")
    p.add_argument("source", metavar="DIR", help="directory holding the reference files")
    p.add_argument("--dataset", required=True, help="the data set it was distilled from "
                   "(its normalisation is declared)")
    p.add_argument("--data-root", help="where downloadable data sets live")
    p.add_argument("--out", required=True, help="DistilledSet directory to write")
    p.add_argument("--step", type=int, default=5000, help="mkdt: which images_K.pt "
                   "(default 5000, the paper's evaluated state)")
    p.add_argument("--space", default="raw", choices=["raw", "normalized"],
                   help="krrst: the stored images are raw pixels (reference, default) or "
                        "already normalised")
    p.add_argument("--stats", help="mkdt: the normalisation the reference applied to the "
                   "stored images, re-normalised into --dataset's: cifar10, cifar100 or "
                   "tinyimagenet (MKDT's constants; default: --dataset's name), or "
                   "'dataset' (already in --dataset's statistics)")
    add_store_args(p)
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    """Write a reference set as a DistilledSet directory (atomically)."""
    import shutil
    import uuid

    from mkdt_bench.convert import from_krrst, from_mkdt
    from mkdt_bench.data import load_dataset

    cache_dir, _ = paths(args)
    out = Path(args.out).expanduser()
    if out.exists():
        raise UserError(f"--out {str(out)!r} already exists; give a new directory")
    creatable(args.out)
    dataset = load_dataset(args.dataset, root=args.data_root, cache_dir=str(cache_dir))
    if args.kind == "mkdt":
        distilled = from_mkdt(args.source, args.step, dataset, args.stats)
    else:
        distilled = from_krrst(args.source, dataset, args.space)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        distilled.save(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = float(distilled.images.min()), float(distilled.images.max())
    print(f"{out}: {len(distilled)} images {distilled.channels}x{distilled.image_size}x"
          f"{distilled.image_size}, targets {tuple(distilled.targets.shape)}, lr "
          f"{distilled.lr}, normalised values in [{lo:.2f}, {hi:.2f}] "
          f"({args.dataset} mean/std)")
    return 0

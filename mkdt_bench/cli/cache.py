"""``mkdt-bench cache``: check or prune the artifact cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mkdt_bench.cli.common import add_store_args, paths
from mkdt_bench.errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser("cache", help="check or prune the artifact cache")
    p.add_argument("action", choices=["verify", "prune"], help="verify: check that every "
                   "artifact's files are exactly those its manifest lists, with their "
                   "sha256; prune: list (with --apply, delete) the artifacts no row of the "
                   "results database uses, moved-aside corrupt copies and orphaned "
                   "temporary files")
    p.add_argument("--apply", action="store_true", help="prune: really delete")
    add_store_args(p)
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    """``cache verify``: one line per corrupt artifact; exit 1 when there is one.
    ``cache prune``: the artifacts no result row uses, corrupt copies and orphaned
    temporary files; deleted only with ``--apply``. Both read a read-only cache."""
    from mkdt_bench.cache import ArtifactCache

    cache_dir, db = paths(args)
    if not (cache_dir / "artifacts").is_dir():
        raise UserError(f"cache directory {str(cache_dir)!r} holds no artifacts")
    # verify and a listing prune write nothing: they work on a read-only cache
    cache = ArtifactCache(cache_dir, create=args.action == "prune" and args.apply)
    if args.action == "prune":
        return _prune(cache, db, args.apply)
    artifacts = cache.folders()
    corrupt = 0
    for stage, key in artifacts:
        bad = cache.verify(stage, key)
        if bad:
            corrupt += 1
            print(f"corrupt: {cache.path(stage, key)} ({', '.join(bad)})")
    print(f"{len(artifacts)} artifacts checked, {corrupt} corrupt (the next run that needs "
          "one moves it aside and recomputes it)")
    return 1 if corrupt else 0


def _prune(cache: Any, db: Path, apply: bool) -> int:
    if not db.is_file():
        raise UserError(f"results database {str(db)!r} does not exist; prune keeps what its "
                        "rows use, so give the database with --results-db")
    from mkdt_bench.api import planning_store
    from mkdt_bench.catalog import unused_artifacts

    store, _ = planning_store(db, cache.root)  # rows kept in spill files use artifacts too
    pruning = unused_artifacts(cache, store, apply)
    for path, size in pruning.unused:
        print(f"{'removed' if apply else 'would remove'}: {path} ({size / 2**20:.1f} MiB)")
    total = sum(size for _, size in pruning.unused) / 2**20
    print(f"{len(pruning.unused)} unused of {pruning.checked} artifacts checked against "
          f"{pruning.rows} result rows of {db}: {total:.1f} MiB "
          f"{'freed' if apply else 'to free (dry run; --apply deletes)'}")
    return 0

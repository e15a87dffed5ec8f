"""``mkdt-bench``: a thin command line over the library, one module per command.

Each command module has ``register(subparsers)`` (its flags) and ``execute(args) -> int``;
the flag groups and checks that several commands share are in :mod:`.common`. ``main`` maps
a :class:`UserError` or an ``OSError`` to one ``error:`` line and exit 2, Ctrl-C to one line
and exit 130.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from mkdt_bench import __version__
from mkdt_bench.errors import UserError
from mkdt_bench.threads import configure_openmp

#: The command modules, in the order ``--help`` lists them.
COMMANDS = ("run", "evaluate", "convert", "plot", "show", "table", "cache", "results", "ls")


def build_parser() -> argparse.ArgumentParser:
    """The ``mkdt-bench`` parser, each command's flags from its own module."""
    from importlib import import_module

    from mkdt_bench.cli.common import Parser

    parser = Parser(prog="mkdt-bench", description="Benchmark dataset distillation for "
                    "self-supervised pre-training.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for name in COMMANDS:
        import_module(f"mkdt_bench.cli.{name}").register(sub)
    return parser


_PYTHON_FORMATWARNING = warnings.formatwarning
_PACKAGE = Path(__file__).resolve().parents[1]


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    """mkdt-bench's own warnings (a skipped plug-in, a refused snapshot, a corrupt artifact,
    malformed rows) as one ``warning:`` line; other packages' warnings as Python shows them."""
    from mkdt_bench.registry import PluginWarning

    if issubclass(category, PluginWarning) or Path(filename).is_relative_to(_PACKAGE):
        return f"warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    configure_openmp()  # before anything imports torch
    try:
        parser = build_parser()  # imports torch and every plug-in: seconds
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C before any command started: one line, no traceback
        print("\ninterrupted before anything started" if sys.stderr.isatty()
              else "interrupted before anything started", file=sys.stderr)
        return 130
    if args.command is None:
        parser.print_help()
        return 2
    warnings.formatwarning = _format_warning
    try:
        return args.handler(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder without write permission, ...
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from mkdt_bench.progress import interrupted_message

        print(interrupted_message(), file=sys.stderr)
        return 130

"""The ``plasticnet`` command.

Each sub-command lives in the module that owns its concept and exposes
``add_parser(subparsers)``, which adds its parser and sets ``func`` (called
with the parsed arguments; its return value is the exit code). Modules are
imported only to build the parser, so ``plasticnet --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, ...) each adding one or more sub-commands, in --help order
COMMAND_MODULES = [
    "plasticnet.train",
    "plasticnet.demo",
    "plasticnet.data.show",
    "plasticnet.pretrain",
    "plasticnet.bench",
    "plasticnet.sweep",
    "plasticnet.report",
    "plasticnet.analysis",
    "plasticnet.reproduce",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plasticnet",
        description="Plastic recurrent networks: train, evaluate, compare rules, sweep, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # bad input, missing or unreadable files: a message, no traceback
        print(f"plasticnet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

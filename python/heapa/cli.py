"""The ``heapa`` command: ``heapa bench ...``, ``heapa simulate ...`` and ``heapa inspect PATH``."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "bench": ("heapa.bench", "million-prompt microbenchmarks against Python baselines"),
    "simulate": ("heapa.sim", "simulated RLVR learner comparing samplers"),
    "inspect": ("heapa._inspect", "what a pool snapshot or TRL checkpoint holds (--json, --plot)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        p = argparse.ArgumentParser(prog="heapa", description="HeaPA prompt-pool engine")
        sub = p.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_) in COMMANDS.items():
            sub.add_parser(name, help=help_, add_help=False)
        if argv and argv[0] not in ("-h", "--help"):
            p.error(f"unknown command {argv[0]!r}")
        p.print_help()
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

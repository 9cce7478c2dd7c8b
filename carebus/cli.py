"""The ``carebus`` command.

Subcommands are an explicit table: each entry names a module in
``carebus.commands`` that provides ``add_arguments(parser)`` and
``run(args, settings) -> int``. Modules are imported only when their command
runs, so ``carebus translate`` never loads Faust.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from carebus.errors import CarebusError, ConfigError
from carebus.log import configure_logging
from carebus.settings import load_settings

#: name -> (module under carebus.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("broker", "start, stop or ask about the local Kafka broker"),
    "topics": ("topics", "create missing topics and report drift"),
    "translate": ("translate", "translate HL7 v2 feeds to events (JSON lines)"),
    "simulate": ("simulate", "run the coordination rules over HL7 v2 feeds offline"),
    "listen": ("listen", "run the MLLP listener (and file-drop/HTTP connectors)"),
    "worker": ("worker", "run the Faust stream worker that raises coordination alerts"),
    "alerts": ("alerts", "acknowledge, resolve or look up alerts"),
    "engine-errors": ("engine_errors", "list or replay the events a rule raised on"),
    "status": ("status", "show stream health: offsets, lag, dead letters, feeds"),
    "dashboard": ("dashboard", "serve the live stream-health web dashboard"),
    "generate": ("generate", "write a synthetic regional HL7 v2 feed"),
    "replay": ("replay", "send HL7 v2 feeds over MLLP to a listener"),
    "run": ("run", "run everything: broker, topics, listener, worker, demo feed"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carebus", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML settings file (or CAREBUS_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        try:
            mod = importlib.import_module(f"carebus.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"carebus.commands.{module}":
                raise
            continue
        mod.add_arguments(cmd)
        cmd.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.error(f"'{args.command}' is not available in this build")
    try:
        settings = load_settings(os.environ, args.config)
        configure_logging(settings.log)
    except ConfigError as exc:
        print(f"carebus: {exc}", file=sys.stderr)
        return 2
    try:
        return int(module.run(args, settings))
    except ConfigError as exc:
        print(f"carebus: {exc}", file=sys.stderr)
        return 2
    except CarebusError as exc:
        print(f"carebus: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

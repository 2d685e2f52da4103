"""The ``syllabus`` command.

The command line only: each module of this package parses one command's arguments and calls
the library (no library module imports this package). Each contributes its subcommands through
a ``register(subparsers)`` function, listed below and imported lazily so ``syllabus --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMAND_MODULES = [
    "syllabus.cli.models",
    "syllabus.cli.ingest",
    "syllabus.cli.defects",
    "syllabus.cli.score",
    "syllabus.cli.select",
    "syllabus.cli.export",
    "syllabus.cli.show",
    "syllabus.cli.finetune",
    "syllabus.cli.evaluate",
    "syllabus.cli.run",
    "syllabus.cli.screenshots",
]


def build_parser() -> argparse.ArgumentParser:
    from syllabus import __version__
    from syllabus.cli.models import models_epilog

    parser = argparse.ArgumentParser(
        prog="syllabus",
        description="Model-centric data selection: ingest a pool, score it with the target model, "
        "select, fine-tune and evaluate.",
        epilog=models_epilog(),
    )
    parser.add_argument("--version", action="version", version=f"syllabus {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


# Prefect gives its temporary server 20 s to start. On a fresh PREFECT_HOME the database
# migrations alone take longer than that on a busy 2-core machine, and the first run of a new
# user failed with "Timed out while attempting to connect to ephemeral Prefect API server".
# A user's own setting wins.
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


# The most characters of an error the command prints: messages quote inputs clipped
# (syllabus.config.clip); this catches one that does not.
MAX_ERROR_CHARS = 1000


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from syllabus.store.credentials import CredentialsInURLError, adopt_all, redact

    try:
        # Before anything can log, store or send them on to Prefect: credentials typed into
        # any URL argument move to the environment (README, "Credentials").
        for name, value in vars(args).items():
            if name != "func":
                setattr(args, name, adopt_all(value))
    except CredentialsInURLError as exc:
        print(f"syllabus {args.command}: error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # a sentence, not a traceback, for the user; -v shows the traceback
        if args.verbose:
            import traceback

            print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
        from pydantic import ValidationError

        from syllabus.config import describe_errors

        text = describe_errors(exc) if isinstance(exc, ValidationError) else str(exc)
        if len(text) > MAX_ERROR_CHARS:  # a message that quotes a huge input: its start says enough
            text = f"{text[:MAX_ERROR_CHARS]}... ({len(text) - MAX_ERROR_CHARS:,} more characters; -v prints them)"
        print(f"syllabus {args.command}: error: {redact(text)}", file=sys.stderr)
        return 1


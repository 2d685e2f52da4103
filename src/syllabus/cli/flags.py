"""The flags several commands share, each written once.

``add(parser, "model", "store", "json")`` gives a command those flags with their one wording;
a command changes a flag's keyword arguments where its meaning differs
(``add(p, "model", model={"required": False, "default": None})``). ``add_set`` and
``add_budget`` give the two flags whose help names the command's own configuration.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any, Callable

SET_HELP = ("change any setting: a dotted path into this command's configuration and a YAML value, "
            "e.g. {example}; repeatable")


def _whole_number(text: str, least: int, hint: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; give {hint}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a size of 0 fails every sample)."""
    return _whole_number(text, 1, "1 or more")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0 (``--limit 0``: all rows)."""
    return _whole_number(text, 0, "0 (all rows) or more")


# name -> (option, keyword arguments of add_argument)
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "store": ("--store", {"default": None, "help": "store URL: a directory, s3://bucket/prefix or memory://name "
                          "(default: $SYLLABUS_STORE or ./syllabus-store)"}),
    "json": ("--json", {"action": "store_true", "help": "print the result as JSON on the last line"}),
    "model": ("--model", {"required": True, "help": "model alias, .gguf file, HF directory or hub id"}),
    "device": ("--device", {"default": None, "help": "cpu, cuda, cuda:1 ... (default: cuda when available)"}),
    "dtype": ("--dtype", {"default": None,
                          "help": "float32 / bfloat16 / float16 (default: fp32 on CPU, bf16 on GPU)"}),
    "trust_remote_code": ("--trust-remote-code", {"action": "store_true",
                                                  "help": "allow model code from the hub (off by default)"}),
    "force": ("--force", {"action": "store_true", "help": "recompute even when a committed result exists"}),
    "seed": ("--seed", {"type": int, "default": None, "help": "random seed"}),
    "limit": ("--limit", {"type": positive_int, "default": None, "metavar": "N", "help": "only the first N"}),
}


def add(parser: argparse.ArgumentParser, *names: str, **changes: dict[str, Any]) -> None:
    """Add the shared flags ``names`` to ``parser``, each with its keyword arguments updated
    by ``changes[name]`` where given."""
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"changes for flags not added: {sorted(unknown)}")
    for name in names:
        option, kwargs = FLAGS[name]
        parser.add_argument(option, **{**kwargs, **changes.get(name, {})})


def add_set(parser: argparse.ArgumentParser, example: str, start: str = "") -> None:
    """``--set PATH=VALUE`` (repeatable) into ``args.changes``; ``start`` says where the path
    starts (``at a selector of the method``)."""
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="PATH=VALUE",
                        help=SET_HELP.format(example=example) + (f"; the path starts {start}" if start else ""))


def add_budget(parser: argparse.ArgumentParser, budget_help: str, ratio_help: str = "or this fraction of the pool",
               ) -> None:
    """``--budget N`` or ``--ratio R``, one of them."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--budget", type=positive_int, default=None, metavar="N", help=budget_help)
    size.add_argument("--ratio", type=float, default=None, metavar="R", help=ratio_help)


def budget_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--budget``/``--ratio`` as a budget: one alternative of the union, so it replaces a
    config's budget whole (:func:`syllabus.config.merge_changes`); None when neither is given."""
    budget, ratio = getattr(args, "budget", None), getattr(args, "ratio", None)
    return {"count": budget} if budget is not None else {"ratio": ratio} if ratio is not None else None


def command(sub: argparse._SubParsersAction, func: Callable[[argparse.Namespace], int], name: str | None = None,
            **text: str) -> argparse.ArgumentParser:
    """The subcommand that runs ``func``, named after it (``cmd_plant_defects``:
    ``plant-defects``) unless ``name`` says otherwise. Its one-line help is the first paragraph
    of ``func``'s docstring and its description the rest, so a command's words stand once, at
    the function that does it; ``text`` gives add_parser words a docstring cannot hold (a
    computed epilog)."""
    first, _, rest = inspect.cleandoc(func.__doc__ or "").partition("\n\n")
    # argparse %-formats a command's help, not its description: a docstring writes % plainly.
    words = {"help": " ".join(first.split()).replace("%", "%%"), "description": " ".join(rest.split()) or None, **text}
    parser = sub.add_parser(name or func.__name__.removeprefix("cmd_").replace("_", "-"), **words)
    parser.set_defaults(func=func)
    return parser


def group(sub: argparse._SubParsersAction, name: str, help: str, description: str) -> argparse._SubParsersAction:
    """A command of subcommands (``syllabus model export``, ``syllabus recipe show``): the
    subparsers to add them to; one of them is required."""
    actions = sub.add_parser(name, help=help, description=description).add_subparsers(
        dest=f"{name}_command", metavar="ACTION")
    actions.required = True
    return actions

"""``syllabus show SELECTION`` and ``syllabus recipe show|list``: a selection's why-table with
the sample text, and the shipped methods' keys (:mod:`syllabus.selection.show` reads them)."""

from __future__ import annotations

import argparse
import json

from syllabus.cli import flags
from syllabus.cli.flags import non_negative_int
from syllabus.selection.show import DEFAULT_LIMIT, TEXT_WIDTH


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_show)
    p.add_argument("selection", metavar="SELECTION",
                   help="the report.json (or selected.parquet, or the selection folder) that `syllabus select` printed")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--chosen", action="store_true", help="only chosen rows")
    which.add_argument("--dropped", action="store_true", help="only dropped rows")
    p.add_argument("--reason", default=None, metavar="TEXT", help="only rows whose why contains TEXT (any case), "
                   "e.g. --reason threshold or --reason 'not among'")
    p.add_argument("--limit", type=non_negative_int, default=DEFAULT_LIMIT, metavar="N",
                   help=f"print at most N rows (default {DEFAULT_LIMIT}; 0 for all)")
    p.add_argument("--width", type=non_negative_int, default=TEXT_WIDTH, metavar="CHARS",
                   help=f"cut each text at CHARS characters (default {TEXT_WIDTH}; --json prints it whole)")
    flags.add(p, "json", json={"help": "print the rows as one JSON object (full text and messages)"})

    rsub = flags.group(sub, "recipe", "read the shipped methods: `recipe list`, `recipe show NAME` (every selector "
                       "key, default and meaning)", "The shipped method recipes (3ds, diq, ifd, less, random, full "
                       "and their variants).")
    show = flags.command(rsub, cmd_recipe_show, "show")
    show.add_argument("name", metavar="NAME", help="a shipped method name (see `syllabus recipe list`) or a recipe .yaml")
    flags.add(show, "json", json={"help": "print it as JSON"})
    listing = flags.command(rsub, cmd_recipe_list, "list")
    flags.add(listing, "json", json={"help": "print the list as JSON"})


def cmd_show(args: argparse.Namespace) -> int:
    """print a selection's why-table with the sample text: chosen rows with scores, dropped rows with the reason

    Read a selection's why-table (every candidate: chosen at which rank by which stage, or dropped
    by which stage and why) joined with each sample's text and the scores the recipe read. Chosen
    rows first, in rank order, then dropped rows by stage."""
    from syllabus.selection.show import print_rows, selection_rows

    shown = selection_rows(args.selection, chosen=args.chosen, dropped=args.dropped, reason=args.reason,
                           limit=args.limit)
    if args.json:
        print(json.dumps({
            "report": shown.url, "method": shown.report.get("method"),
            "n_candidates": shown.report.get("n_candidates"), "n_selected": shown.report.get("n_selected"),
            "n_matching": shown.n_matching, "rows": shown.rows,
        }, ensure_ascii=False, default=str))
    else:
        print_rows(shown, args.width)
    return 0


def cmd_recipe_show(args: argparse.Namespace) -> int:
    """every selector key of a method with its value, default and meaning, and its scorers' settings

    Print a method's selectors in order with every config key (the recipe's value, the default and
    what it means) and the scorers it needs with their config defaults."""
    from syllabus.selection.show import describe_recipe, print_recipe

    info = describe_recipe(args.name)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        print_recipe(info)
    return 0


def cmd_recipe_list(args: argparse.Namespace) -> int:
    """the shipped methods and what each does"""
    from syllabus.selection.show import print_recipe_list, recipe_rows

    rows = recipe_rows()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        print_recipe_list(rows)
    return 0

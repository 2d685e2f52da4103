"""``syllabus select``: run a method's selectors on cached scores (no model, seconds)."""

from __future__ import annotations

import argparse
import json
import sys

from syllabus.cli import flags
from syllabus.config import parse_set


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_select)
    p.add_argument("--method", required=True, metavar="M", help="a shipped recipe name (3ds, diq, ifd, less, random, full) or a recipe .yaml path")
    p.add_argument("--scores", nargs="+", default=[], metavar="URL", help="score manifest JSONs (printed by `syllabus score --json`) or score Parquet files")
    flags.add_budget(p, "select N samples (1 or more)", "select this fraction of the pool, e.g. 0.1")
    p.add_argument("--fill", choices=["rank"], default=None,
                   help="when the stages keep fewer than the budget, fill the rest by rank: from the rows that entered "
                   "the stage that cut the selection short, closest to passing first (the why-table names them); "
                   "default: the recipe budget's fill, else none")
    p.add_argument("--allow-short", action="store_true",
                   help="accept a selection short of the budget (exit 0); without it (or --fill rank) a short "
                   "selection is committed for inspection and the command exits 1")
    flags.add_set(p, "threshold.min_value=85 --set band.low=40", "at a selector of the method")
    p.add_argument("--pool", default=None, metavar="MANIFEST_URL", help="pool manifest URL (default: the one named by the score manifests)")
    flags.add(p, "seed", seed={"help": "seed for K-Center's first centre and random sampling (default: the recipe's)"})
    p.add_argument("--compare", nargs="+", default=[], metavar="SELECTION_URL", help="other selections (selected.parquet or report.json) to report the Jaccard overlap with")
    flags.add(p, "store")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG pictures")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="defect labels (from `syllabus plant-defects`): report the share of defects in the selection "
                   "and after each stage, with 95%% intervals, next to the pool's base rate")
    flags.add(p, "json")


def select_config(args: argparse.Namespace):
    """``syllabus select``'s arguments as the select stage's config (a SelectConfig)."""
    from syllabus.pipeline.config import SelectConfig

    return SelectConfig(method=args.method, scores=args.scores, budget=flags.budget_of(args), fill=args.fill,
                        allow_short=args.allow_short, seed=args.seed,
                        selector_overrides=parse_set(args.changes, "threshold.min_value=85"), overrides_source="--set",
                        pool=args.pool, compare=args.compare, plots=not args.no_plots)


def cmd_select(args: argparse.Namespace) -> int:
    """select a subset from cached scores with a method recipe (3ds, diq, ifd, less, random, full)

    Join score tables on sample_id, run the method's selectors (threshold, band, kcenter, quadrant,
    topk, random, full) and commit the chosen samples, a per-candidate 'why' table, a JSON report
    and pictures to the store. Needs no model."""

    from syllabus.pipeline.stages import select

    config = select_config(args)
    labels = None
    if args.labels:
        from syllabus.selection.defects import load_labels

        labels = load_labels(args.labels)  # a bad labels file fails before any work
    selection = select(config, args.store)
    recipe, report = selection.recipe, selection.report
    width = max(len(c["stage"]) for c in report["counts"])
    for c in report["counts"]:
        print(f"  {c['stage']:<{width}}  {c['n']:>9,}")
    for note in report["notes"]:
        print(f"  note: {note}")
    for o in report["overlap"]:
        print(f"  overlap with {o['selection']}: {o['n_both']:,} shared, Jaccard {o['jaccard']:.4f}")
    print(f"selected {report['n_selected']:,} of {report['n_candidates']:,} with {recipe.name} (seed {report['seed']})")
    audit = _audit_defects(args, selection, labels) if labels is not None else None
    print(f"report: {report['outputs']['report']}")
    if args.json:
        print(json.dumps({
            "selected": report["outputs"]["selected"],
            "report": report["outputs"]["report"],
            "candidates": report["outputs"]["candidates"],
            "plots": report["outputs"]["plots"],
            "n_selected": report["n_selected"],
            "n_candidates": report["n_candidates"],
            "method": recipe.name,
            "seed": report["seed"],
            "budget": report["budget"]["resolved"],
            "counts": {c["stage"]: c["n"] for c in report["counts"]},
            **({"defects": audit} if audit is not None else {}),
        }))
    if selection.error:
        # The report is committed for inspection, but an empty subset is not a result, nor is
        # one short of its budget unless the budget allows it.
        print(f"syllabus select: error: {selection.error}", file=sys.stderr)
        return 1
    return 0


def _audit_defects(args, selection, labels) -> dict:
    """Print the defect-avoidance table and commit it (JSON, Markdown, picture) next to the selection."""
    from syllabus.selection.defects import audit_markdown, audit_selection, plot_audit
    from syllabus.selection.report import selection_key
    from syllabus.store import Store

    recipe, result, candidates, report = selection.recipe, selection.result, selection.candidates, selection.report
    audit = audit_selection(result.candidates_frame(), labels, report["stages"], args.labels)
    markdown = audit_markdown({recipe.name: audit}, {recipe.name: report["notes"]})
    print(markdown)
    store, prefix = Store(args.store), selection_key(recipe, result, candidates)
    store.commit(f"{prefix}/defects.json", json.dumps(audit, indent=2).encode("utf-8"), {"labels": args.labels})
    store.commit(f"{prefix}/defects.md", markdown.encode("utf-8"), {"labels": args.labels})
    audit["outputs"] = {"json": store.url(f"{prefix}/defects.json"), "markdown": store.url(f"{prefix}/defects.md")}
    if not args.no_plots:
        store.commit(f"{prefix}/defects.png", plot_audit({recipe.name: audit}), {"kind": "png"})
        audit["outputs"]["plot"] = store.url(f"{prefix}/defects.png")
    print(f"defect report: {audit['outputs']['json']}")
    return audit

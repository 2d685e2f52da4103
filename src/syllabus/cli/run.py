"""``syllabus run [CONFIG]``: the whole pipeline, on the embedded demo by default."""

from __future__ import annotations

import argparse
import json
import logging
import os
from importlib.metadata import entry_points
from pathlib import Path

from syllabus.cli import flags
from syllabus.cli.flags import positive_int
from syllabus.config import parse_set


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_run)
    p.add_argument("config", nargs="?", default=None, help="YAML file of pipeline parameters")
    flags.add(p, "store", store={"help": "store URL (overrides the config)"})
    p.add_argument("--methods", default=None, help="comma-separated methods, e.g. 3ds,ifd,random")
    _budget_flags(p)
    flags.add_set(p, "finetune.epochs=2 or scorer_configs.difficulty.max_new_tokens=64")
    flags.add(p, "json")

    c = flags.command(sub, cmd_compare)
    c.add_argument("config", nargs="?", default=None, help="YAML file of compare parameters")
    c.add_argument("--pool", nargs="+", default=None, help="pool files/dirs/URLs (default: the embedded demo pool)")
    flags.add(c, "model", model={"required": False})
    c.add_argument("--methods", default=None, help="comma-separated methods (default 3ds,diq,ifd,random,full)")
    _budget_flags(c)
    c.add_argument("--seeds", type=positive_int, default=None, help="random selection seeds (default 3)")
    c.add_argument("--windows", default=None,
                   help="difficulty windows NAME=LOW:HIGH,... (default easy=0:50,medium=25:75,hard=50:100; 'none' for none)")
    c.add_argument("--benches", default=None, help="comma-separated benchmarks (built-in names or files)")
    flags.add(c, "store", store={"help": "store URL (overrides the config)"})
    c.add_argument("--report-dir", default=None, help="write report.md, plots and comparison.json here")
    c.add_argument("--labels", default=None, metavar="FILE",
                   help="defect labels from `syllabus plant-defects`: add the defect-avoidance table (share of planted "
                   "defects per arm, per kind and after each stage, 95%% intervals) to the report, its plot and MLflow")
    c.add_argument("--stop-after", choices=("select", "evaluate"), default=None,
                   help="'select': stop every arm after its selection (no fine-tuning or evaluation; with --labels, "
                   "the defect-avoidance report in seconds once scores are cached)")
    flags.add_set(c, "finetune.epochs=2 or selector_overrides.3ds.threshold.min_percentile=20")
    flags.add(c, "json")


def _budget_flags(parser: argparse.ArgumentParser) -> None:
    flags.add_budget(parser, "select this many samples with every method (replaces the config's budget, as "
                     "--set budget.count=N does)")


def _split(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _params(cls: type, args: argparse.Namespace, changes: dict):
    """The config file's parameters (or the defaults), then the flags (each replaces its whole
    field: ``--windows none`` leaves no window, ``--ratio`` the budget), then the ``--set`` paths
    merged on top by the same rule (:func:`syllabus.config.merge_changes`: deep, but naming
    ``budget.count`` or ``budget.ratio`` replaces the budget, as the flags do);
    every setting is checked here, before the flow starts a Prefect server or an MLflow run,
    and so is every file the parameters name (a missing pool path fails here, in one line)."""
    from syllabus.config import check_config_paths

    params = cls.from_file(args.config) if args.config else cls()
    flags = {k: v for k, v in changes.items() if v is not None}
    if flags:
        params = cls.model_validate({**params.model_dump(mode="json"), **flags})
    paths = parse_set(args.changes, "finetune.epochs=2")
    params = params.with_changes(paths) if paths else params
    # The config file is named only where its paths were not replaced on the command line.
    files = ("pool", "labels", "benches")
    given = set(flags) | set(paths)
    check_config_paths(params, args.config if args.config and not given.intersection(files) else "")
    params.check_environment()
    return params


FLOW_ENTRY_POINTS = "syllabus.flows"


def load_flow(name: str):
    """The Prefect layer's flow ``name`` (flows/, installed as ``syllabus_flows``), found through
    the ``syllabus.flows`` entry points that pyproject.toml declares: src/syllabus names no
    module outside itself, and importing it never imports prefect."""
    found = entry_points(group=FLOW_ENTRY_POINTS, name=name)
    if not found:
        raise RuntimeError(
            f"no flow named {name!r} is declared under the {FLOW_ENTRY_POINTS!r} entry points, so the Prefect layer "
            "(flows/ and tasks/) is not installed with this syllabus; reinstall the project from its repository root "
            "with `pip install -e .` (or `make install`)")
    return next(iter(found)).load()


def _flow(name: str):
    """A flow of the Prefect layer, with Prefect's state kept in the project."""
    os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))  # design.md: state stays in the project
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "syllabus,flows,tasks")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here; no telemetry attempts
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    return load_flow(name)


def _outcome(state) -> tuple[dict, str | None]:
    """A flow's result and, for a run that ended "Partially failed" (missing shards, a failed
    arm), the message naming what is missing and how to retry it; a crash raises."""
    from syllabus.pipeline.partial import PartialFailure

    result = state.result(raise_on_failure=False)
    if isinstance(result, PartialFailure) and result.result is not None:
        result = result.result
    elif isinstance(result, BaseException):
        raise result
    return result, (state.message if state.is_failed() else None)


def parse_windows(text: str) -> dict[str, tuple[float, float]]:
    """``easy=0:50,medium=25:75`` -> ``{"easy": (0, 50), "medium": (25, 75)}``; ``none`` -> ``{}``."""
    if text.strip().lower() == "none":
        return {}
    out = {}
    for part in _split(text):
        try:
            name, band = part.split("=")
            low, high = band.split(":")
            out[name.strip()] = (float(low), float(high))
        except ValueError:
            raise ValueError(f"window {part!r} is not NAME=LOW:HIGH (percentiles), e.g. medium=25:75") from None
    return out


def run_params(args: argparse.Namespace):
    """``syllabus run``'s PipelineParams: the config file, the flags, then ``--set``."""
    from syllabus.pipeline.config import PipelineParams

    return _params(PipelineParams, args, {"store": args.store, "methods": _split(args.methods) if args.methods else None,
                                          "budget": flags.budget_of(args)})


def cmd_run(args: argparse.Namespace) -> int:
    """run the whole pipeline (ingest, score, select, fine-tune, evaluate); the embedded demo by
    default

    Run the Prefect `pipeline` flow. With no CONFIG it runs the embedded defaults: a small slice of
    the demo pool (HealthBench + AlpacaEval), SmolLM2-135M, 3DS against random at the same budget, a
    local store, Prefect's temporary server and MLflow in ./mlflow.db. CONFIG is a YAML file of
    PipelineParams fields."""

    from syllabus.pipeline.report import render_table

    params = run_params(args)
    result, partial = _outcome(_flow("pipeline")(params, return_state=True))
    print()
    print(render_table(result["results"]))
    print()
    print(f"MLflow run:  {result['mlflow_run_url']}")
    print(f"  browse it: mlflow ui --backend-store-uri {result['mlflow_tracking_uri']}  (then open the link)")
    for name, url in result["scores"].items():
        print(f"scores ({name}): {url}")
    for row in result["results"]:
        if row.get("subset"):
            print(f"selected subset ({row['method']}): {row['subset']}")
    if args.json:
        print(json.dumps({k: result[k] for k in ("results", "mlflow_run_id", "mlflow_run_url", "scores", "timings")}, default=str))
    if partial:
        print(f"\nPARTIALLY FAILED: {partial}")
    return 0 if not partial and not any(r.get("error") for r in result["results"]) else 1


def compare_params(args: argparse.Namespace):
    """``syllabus compare``'s CompareParams: the config file, the flags, then ``--set``."""
    from syllabus.pipeline.config import CompareParams

    return _params(CompareParams, args, {
        "pool": args.pool, "model": args.model, "methods": _split(args.methods) if args.methods else None,
        "budget": flags.budget_of(args), "seeds": args.seeds, "windows": parse_windows(args.windows) if args.windows else None,
        "benches": _split(args.benches) if args.benches else None, "store": args.store, "report_dir": args.report_dir,
        "labels": args.labels, "stop_after": args.stop_after})


def cmd_compare(args: argparse.Namespace) -> int:
    """compare methods at one budget (random over seeds, difficulty windows) with intervals

    Run the Prefect `compare` flow: score the pool once (cached), select with every method at the
    same budget (random once per seed, 3DS also over easy/medium/hard difficulty windows), fine-tune
    each subset with the same settings, evaluate each on the same items, and write one comparison
    table with 95% intervals and paired differences against random: to MLflow (a parent run, a
    nested run per arm), to the store and to --report-dir as Markdown with plots. CONFIG is a YAML
    file of CompareParams fields; flags override it."""
    params = compare_params(args)
    if params.labels:
        from syllabus.selection.defects import load_labels

        load_labels(params.labels)  # a bad labels file fails before any server or run starts
    result, partial = _outcome(_flow("compare")(params, return_state=True))
    print()
    print(result["markdown"])
    print(f"MLflow run:  {result['mlflow_run_url']}")
    print(f"  browse it: mlflow ui --backend-store-uri {result['mlflow_tracking_uri']}  (then open the link)")
    print(f"report: {result['report'].get('report.md')}")
    if args.json:
        print(json.dumps({k: result[k] for k in ("mlflow_run_id", "mlflow_run_url", "scores", "timings", "report", "comparison")},
                         default=str))
    if partial:
        print(f"\nPARTIALLY FAILED: {partial}")
    return 0 if not partial and not any(a.get("error") for a in result["comparison"]["arms"]) else 1

"""``syllabus run [CONFIG]``: the whole pipeline, on the embedded demo by default."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline (ingest, score, select, fine-tune, evaluate); the embedded demo by default",
        description="Run the Prefect `pipeline` flow. With no CONFIG it runs the embedded defaults: a small slice of "
        "the demo pool (HealthBench + AlpacaEval), SmolLM2-135M, 3DS against random at the same budget, a local "
        "store, Prefect's temporary server and MLflow in ./mlflow.db. CONFIG is a YAML file of PipelineParams fields.",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML file of pipeline parameters")
    p.add_argument("--store", default=None, help="store URL (overrides the config)")
    p.add_argument("--methods", default=None, help="comma-separated methods, e.g. 3ds,ifd,random")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from syllabus.pipeline.config import PipelineParams
    from syllabus.pipeline.report import render_table

    params = PipelineParams.from_file(args.config) if args.config else PipelineParams()
    changes = {}
    if args.store:
        changes["store"] = args.store
    if args.methods:
        changes["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if changes:
        params = PipelineParams(**{**params.model_dump(), **changes})
    # Keep Prefect's state inside the project unless the user chose otherwise (design.md).
    os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "syllabus")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here; no telemetry attempts
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    pipeline = importlib.import_module("flows.pipeline").pipeline  # the Prefect layer, outside src/
    result = pipeline(params)
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
    return 0 if not any(r.get("error") for r in result["results"]) else 1

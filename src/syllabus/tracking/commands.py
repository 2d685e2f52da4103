"""``syllabus screenshots``: pictures of a run's Prefect and MLflow pages (headless Chromium)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "screenshots",
        help="screenshot a run's Prefect flow-run page and MLflow run page with headless Chromium",
        description="Take PNG screenshots of the Prefect flow-run page and the MLflow run page of a pipeline or "
        "compare run, from servers on 127.0.0.1 (start them with `prefect server start` and `mlflow ui`). "
        "Needs Debian's chromium package.",
    )
    p.add_argument("--flow-run", default=None, help="Prefect flow run id (the MLflow run's prefect.flow_run_id tag)")
    p.add_argument("--prefect-ui", default="http://127.0.0.1:4200", help="Prefect UI base URL")
    p.add_argument("--mlflow-run", default=None, help="MLflow run id")
    p.add_argument("--mlflow-ui", default="http://127.0.0.1:5000", help="MLflow UI base URL")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to look the run up in (default: --mlflow-ui)")
    p.add_argument("--out", default="screenshots", help="directory for the PNGs")
    p.add_argument("--wait-ms", type=int, default=20000, help="virtual time the pages get to load the run")
    p.set_defaults(func=cmd_screenshots)


def cmd_screenshots(args: argparse.Namespace) -> int:
    from syllabus.tracking.screenshots import screenshot_runs

    flow_run, experiment = args.flow_run, None
    if args.mlflow_run:
        from mlflow.tracking import MlflowClient

        run = MlflowClient(args.tracking_uri or args.mlflow_ui).get_run(args.mlflow_run)
        experiment = run.info.experiment_id
        flow_run = flow_run or run.data.tags.get("prefect.flow_run_id")
    if not flow_run and not args.mlflow_run:
        raise ValueError("give --flow-run and/or --mlflow-run (the MLflow run names its Prefect flow run in a tag)")
    pages = screenshot_runs(args.out, args.prefect_ui, flow_run, args.mlflow_ui, experiment, args.mlflow_run,
                            wait_ms=args.wait_ms)
    print(json.dumps({name: {"url": page.url, "png": str(page.png)} for name, page in pages.items()}))
    return 0

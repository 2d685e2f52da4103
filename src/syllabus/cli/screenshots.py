"""``syllabus screenshots``: pictures of a run's Prefect and MLflow pages (headless Chromium)."""

from __future__ import annotations

import argparse
import json

from syllabus.cli import flags


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_screenshots)
    p.add_argument("--flow-run", default=None, help="Prefect flow run id (the MLflow run's prefect.flow_run_id tag)")
    p.add_argument("--prefect-ui", default="http://127.0.0.1:4200", help="Prefect UI base URL")
    p.add_argument("--mlflow-run", default=None, help="MLflow run id")
    p.add_argument("--mlflow-ui", default="http://127.0.0.1:5000", help="MLflow UI base URL")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to look the run up in (default: --mlflow-ui)")
    p.add_argument("--page", action="append", default=[], metavar="NAME=URL",
                   help="also screenshot URL as NAME.png, e.g. a deployment's Run form: "
                   "--page deployment-form=http://127.0.0.1:4200/deployments/deployment/ID/run (repeatable)")
    p.add_argument("--out", default="screenshots", help="directory for the PNGs")
    p.add_argument("--wait-ms", type=int, default=20000, help="virtual time the pages get to load the run")


def _pages(items: list[str]) -> dict[str, str]:
    pages = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"--page {item!r} must look like NAME=URL with an http(s) URL, "
                             "e.g. --page deployment-form=http://127.0.0.1:4200/deployments")
        pages[name] = url
    return pages


def cmd_screenshots(args: argparse.Namespace) -> int:
    """screenshot a run's Prefect flow-run page and MLflow run page with headless Chromium

    Take PNG screenshots of the Prefect flow-run page, the MLflow run page and the experiment's runs
    table of a pipeline or compare run, and of any other page (--page), from servers on 127.0.0.1
    (start them with `prefect server start` and `mlflow server`). Needs Debian's chromium package;
    as root it runs Chromium with --no-sandbox, which Chromium requires there."""

    from syllabus.tracking.screenshots import screenshot_runs

    flow_run, experiment, pages = args.flow_run, None, _pages(args.page)
    if args.mlflow_run:
        from mlflow.tracking import MlflowClient

        run = MlflowClient(args.tracking_uri or args.mlflow_ui).get_run(args.mlflow_run)
        experiment = run.info.experiment_id
        flow_run = flow_run or run.data.tags.get("prefect.flow_run_id")
    if not flow_run and not args.mlflow_run and not pages:
        raise ValueError("give --flow-run, --mlflow-run (the MLflow run names its Prefect flow run in a tag) and/or "
                         "--page NAME=URL")
    shots = screenshot_runs(args.out, args.prefect_ui, flow_run, args.mlflow_ui, experiment, args.mlflow_run,
                            pages=pages, wait_ms=args.wait_ms)
    print(json.dumps({name: {"url": page.url, "png": str(page.png)} for name, page in shots.items()}))
    return 0

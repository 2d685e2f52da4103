"""``benchmarks/scale.py --real``: the scale benchmark through the deployed machinery.

Three servers, each on a free port of 127.0.0.1 and stopped at the end (also on an error):
``prefect server start`` (``prefect_tasks.start_server``), ``moto_server`` (the S3 API; the
store reaches it through s3fs with ``AWS_ENDPOINT_URL``, as the tests' ``s3_endpoint`` does) and
``mlflow server`` (sqlite backend, artifacts proxied into the work folder, as the tests'
``mlflow_server``). Every stage runs in a process of its own (``scale.run_child``: its peak RSS
is its own) against those servers:

- ingest: the pipeline's ``ingest`` task, once into S3 and once into a local folder, against
  ``pyarrow.json.read_json`` of the same file;
- score: the ``score`` flow (what ``syllabus run`` scores with) for each synthetic scorer, the
  benchmark's shard size, the flow's default ``max_tasks_per_scorer``; its task runs counted
  through the API (``prefect_tasks.settled_task_runs``) and the flow-run page's requests timed
  every 2 s while it runs (``prefect_tasks.PageSampler``); baseline as without ``--real``;
- select: per method, the ``pipeline`` flow with ``stop_after="select"`` (what ``syllabus run
  --stop-after select`` runs: ingest, scoring, every shard cached by the score stage, then the
  arm's selection with its MLflow runs). The row's seconds are the arm's (``time/<arm>_seconds``:
  selection and its MLflow logging); the note gives the whole flow's. Its why-table
  (candidates), subset and report are then listed in and read back from the MLflow server
  (Parquet footers). Task runs: every task run the flow and its score subflow created;
- compare (``--compare``): the ``compare`` flow (what ``syllabus compare --stop-after select``
  runs) with stop_after="select" and every arm of the default compare plus LESS, at one budget
  (``--kcenter-budget``): the synthetic 3DS, DIQ, IFD and LESS recipes by path, the shipped
  ``random`` over the default 3 seeds and ``full``, and the difficulty windows easy/medium/hard
  (``window_method`` is the synthetic 3DS recipe's path: its band selector is moved). The row's
  seconds are the whole flow's (ingest again, the cached score stage, every arm, the comparison
  report); baseline: for each arm, reading its score tables (the pool's for random and full) and
  sorting them, measured once per recipe and counted once per arm. The MLflow parent run (its
  ``comparison/report.md``) and each nested arm run are checked on the server: FINISHED, with
  ``selection/selected.parquet`` of ``select/n_selected`` rows, the budget's (every candidate for
  full), and the why-table. ``--compare`` alone skips the per-method pipeline flows (the compare
  covers every method); ``--compare after-selects`` runs them first and puts their sum in the
  compare row's note. The compare's difficulty analysis (D1/D2/D3 correlations) reads the
  shipped ``difficulty`` scorer's columns, so it is empty over the synthetic scores.

The synthetic scorers reach the flows' workers by registration at run time
(``synthetic_scorers.register``) in the process that runs the flow: the flows score with the
thread task runner there. Process workers (Dask, Ray) would need the registration in each
worker (a ``syllabus.plugins`` entry point), which this benchmark does not set up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BUCKET = "syllabus-scale"


# ------------------------------------------------------------------------------ child jobs
def run_real_job(job: dict[str, Any]) -> dict[str, Any]:
    """One stage in this (child) process, against the servers in the environment."""
    kind = job["kind"]
    if kind == "real-ingest":
        from syllabus.pipeline.config import IngestConfig
        from syllabus_tasks.stages import ingest_task

        summary = ingest_task(IngestConfig(inputs=[job["pool_file"]], shard_size=job["shard_size"]), job["store"])
        return {"manifest": summary["manifest"], "records_ok": summary["records_ok"], "shards": summary["shards"],
                "records_rejected": summary["records_rejected"], "duplicates": summary["duplicates"]}
    if kind == "real-compare":
        from prefect.client.orchestration import get_client
        from prefect.flow_engine import run_flow

        from syllabus_flows.compare import compare
        from syllabus_flows.outcome import result_of

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(job["flow_run_id"]))
        state = run_flow(compare, flow_run=run, parameters=job["parameters"], return_type="state")
        result = result_of(state)
        return {"state": state.name, "timings": result["timings"], "mlflow_run_id": result["mlflow_run_id"],
                "scores": result["scores"], "report": result["report"],
                "mlflow": mlflow_compare(job["tracking_uri"], result["mlflow_run_id"])}
    if kind in ("real-score", "real-pipeline"):
        from prefect.client.orchestration import get_client
        from prefect.flow_engine import run_flow

        from syllabus_flows.outcome import result_of

        if kind == "real-score":
            from syllabus_flows.score import score as flow
        else:
            from syllabus_flows.pipeline import pipeline as flow
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(job["flow_run_id"]))
        state = run_flow(flow, flow_run=run, parameters=job["parameters"], return_type="state")
        result = result_of(state)
        if kind == "real-score":
            m = result[job["scorer"]]
            return {"state": state.name, "score_manifest": m["url"], "samples": m["samples"],
                    "shards_scored": m["shards_scored"], "shards_cached": m["shards_cached"],
                    "missing": len(m["missing"])}
        return {"state": state.name, "timings": result["timings"], "mlflow_run_id": result["mlflow_run_id"],
                "score_costs": result["score_costs"], "mlflow": mlflow_selection(job["tracking_uri"], result["mlflow_run_id"])}
    raise ValueError(f"unknown job kind {kind!r}")


def _selection_run(client: Any, child: Any, tracking_uri: str, tmp: str, download: Any) -> dict[str, Any]:
    """A nested selection run on the MLflow server: its status, ``select/`` metrics and stage
    counts, and each artifact under ``selection/`` with its size; the Parquet artifacts that
    ``download(path)`` names are downloaded from the server, as a teammate would, and their
    footer's rows read."""
    import mlflow
    import pyarrow.parquet as pq

    run_id = child.info.run_id
    out: dict[str, Any] = {"run_id": run_id, "status": child.info.status,
                           "n_selected": child.data.metrics.get("select/n_selected"),
                           "n_candidates": child.data.metrics.get("select/n_candidates"), "artifacts": {},
                           "stages": {k.removeprefix("select/stage/"): v for k, v in sorted(child.data.metrics.items())
                                      if k.startswith("select/stage/")}}
    for art in client.list_artifacts(run_id, "selection"):
        entry: dict[str, Any] = {"bytes": art.file_size}
        if download(art.path):
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=art.path, dst_path=tmp,
                                                        tracking_uri=tracking_uri)
            entry["rows"] = pq.read_metadata(local).num_rows
            os.unlink(local)
        out["artifacts"][art.path] = entry
    return out


def _nested_runs(client: Any, parent_id: str) -> tuple[Any, list[Any]]:
    parent = client.get_run(parent_id)
    return parent, client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                      max_results=1000)


def mlflow_selection(tracking_uri: str, parent_id: str) -> dict[str, Any]:
    """The arm's nested run on the MLflow server (:func:`_selection_run`), every Parquet
    artifact under ``selection/`` read back."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    _, children = _nested_runs(client, parent_id)
    if len(children) != 1:
        raise RuntimeError(f"MLflow run {parent_id} has {len(children)} nested runs; expected one (one method a run)")
    with tempfile.TemporaryDirectory() as tmp:
        return _selection_run(client, children[0], tracking_uri, tmp, lambda path: path.endswith(".parquet"))


def mlflow_compare(tracking_uri: str, parent_id: str) -> dict[str, Any]:
    """The compare's MLflow parent run (status, its ``comparison/`` artifacts) and each nested
    arm run (:func:`_selection_run`); ``selected.parquet`` is read back (the why-table, one row
    per candidate in every arm, is listed with its size, not downloaded)."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent, children = _nested_runs(client, parent_id)
    out: dict[str, Any] = {"run_id": parent_id, "status": parent.info.status,
                           "comparison": sorted(a.path for a in client.list_artifacts(parent_id, "comparison")),
                           "arms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for child in children:
            arm = _selection_run(client, child, tracking_uri, tmp, lambda path: path.endswith("selected.parquet"))
            out["arms"][child.data.tags.get("mlflow.runName", child.info.run_id)] = arm
    return out


def compare_problems(ml: dict[str, Any], expected: dict[str, int | None]) -> list[str]:
    """What the compare's MLflow runs lack: a FINISHED parent with its report, one FINISHED
    nested run per expected arm whose ``selection/selected.parquet`` has ``select/n_selected``
    rows, that count the arm's expected one (``None``: every candidate, as ``full`` selects)."""
    out = []
    if ml["status"] != "FINISHED":
        out.append(f"compare parent run {ml['run_id']} is {ml['status']}, not FINISHED")
    if "comparison/report.md" not in ml["comparison"]:
        out.append(f"compare parent run {ml['run_id']} has no comparison/report.md ({ml['comparison']})")
    if sorted(ml["arms"]) != sorted(expected):
        out.append(f"nested arm runs {sorted(ml['arms'])}; expected {sorted(expected)}")
    for name, want in expected.items():
        arm = ml["arms"].get(name)
        if arm is None:
            continue
        rows = arm["artifacts"].get("selection/selected.parquet", {}).get("rows")
        want = arm["n_candidates"] if want is None else want
        if arm["status"] != "FINISHED" or rows is None or rows != arm["n_selected"] or rows != want:
            out.append(f"arm {name}: run {arm['status']}, selected.parquet {rows} rows, n_selected "
                       f"{arm['n_selected']}, expected {want}")
        if "selection/candidates.parquet" not in arm["artifacts"]:
            out.append(f"arm {name}: no selection/candidates.parquet (the why-table)")
    return out


# ------------------------------------------------------------------------------ parent
def settled_total(quiet: float = 10.0, timeout: float = 1800.0) -> int:
    """Every task run the server has recorded, once unchanged for ``quiet`` seconds (task runs
    arrive as events the server turns into rows in the background)."""
    from prefect.client.orchestration import get_client

    start, last, since = time.perf_counter(), None, time.perf_counter()
    with get_client(sync_client=True) as client:
        while True:
            response = client._client.post("/task_runs/count", json={})
            response.raise_for_status()
            count = int(response.json())
            if count != last:
                last, since = count, time.perf_counter()
            elif time.perf_counter() - since >= quiet or time.perf_counter() - start > timeout:
                return count
            time.sleep(2)


def api_latency(sampler: Any) -> tuple[float, float] | None:
    """Median and max seconds over every flow-run page request sampled (each kind: ``api_requests``)."""
    seconds = [x for s in sampler.seconds.values() for x in s]
    return (statistics.median(seconds), max(seconds)) if seconds else None


def api_requests(sampler: Any) -> dict[str, Any]:
    """Per kind of flow-run page request: how many were timed, their median and max seconds, and errors."""
    out: dict[str, Any] = {what: {"n": len(s), "median_s": round(statistics.median(s), 3), "max_s": round(max(s), 3),
                                  "over_2_s": sum(x > 2.0 for x in s)} for what, s in sampler.seconds.items()}
    if sampler.errors:
        out["errors"] = sampler.errors[:5]
    return out


def s3_objects(s3: Any) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return sum(page.get("KeyCount", 0) for page in pages)


def main_real(args: argparse.Namespace) -> int:
    import boto3
    import yaml

    import prefect_tasks
    import scale
    from ingest import generate_pool  # benchmarks/ingest.py: the same generated Alpaca records

    work = (args.dir or Path(f"/tmp/syllabus-scale-real-{args.n}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    stop_after = args.stop_after or "select"
    log_path = work / "stages.log"
    cap = args.rss_cap_gb
    table = scale.Table(args.n, work / "results.json", real=True)
    pool_file = work / f"pool-{args.n}.jsonl"
    if not pool_file.exists():
        t0 = time.perf_counter()
        size = generate_pool(pool_file, args.n, defects=False)
        print(f"generated {pool_file} ({size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s", flush=True)

    run_id = time.strftime("%Y%m%d-%H%M%S")
    os.environ.update({
        "PREFECT_HOME": str(work / "client-home"), "SYLLABUS_RATES": str(work / "rates.json"),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    })
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "syllabus,flows,tasks")  # as the CLI and deployments run flows
    servers = []
    try:
        t0 = time.perf_counter()
        prefect, api = prefect_tasks.start_server(work / "prefect-home", work / "prefect-server.log")
        servers.append(prefect)
        os.environ["PREFECT_API_URL"] = api
        moto_port, mlflow_port = prefect_tasks.free_port(), prefect_tasks.free_port()
        endpoint = f"http://127.0.0.1:{moto_port}"
        servers.append(prefect_tasks.start_process([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                                                   f"{endpoint}/moto-api/", work / "moto-server.log"))
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        artifacts = work / f"mlartifacts-{run_id}"
        servers.append(prefect_tasks.start_process(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{work / f'mlflow-{run_id}.db'}",
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1"], f"{tracking_uri}/health", work / "mlflow-server.log"))
        (work / "servers.json").write_text(json.dumps({"pids": [p.pid for p in servers], "prefect": api,
                                                         "s3": endpoint, "mlflow": tracking_uri}))
        print(f"servers up in {time.perf_counter() - t0:.1f}s: Prefect {api}, moto S3 {endpoint}, MLflow {tracking_uri}",
              flush=True)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        prefect_tasks.allow_uncommitted_tree()
        model = str(prefect_tasks.stand_in_model(work / "synthetic-model"))
        stores = {"s3": f"s3://{BUCKET}/store-{run_id}", "local": str(work / f"store-{run_id}")}
        store = stores[args.real_store]

        def objects() -> int:
            return s3_objects(s3) + scale.count_files(Path(stores["local"]), artifacts)

        def flow_stage(label: str, flow: Any, parameters: dict[str, Any], job: dict[str, Any],
                       base_job: dict[str, Any] | None, count: Any) -> tuple:
            """Create the flow run here, run it in a child while sampling the flow-run page, then count its task runs."""
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                run = client.create_flow_run(flow, parameters=parameters)
            before = objects()
            sampler = prefect_tasks.PageSampler(run.id)
            sampler.start()
            res = scale.run_child({**job, "label": label, "flow_run_id": str(run.id), "parameters": parameters},
                                  cap, log_path)
            sampler.stop.set()
            sampler.join(timeout=120)
            written = objects() - before
            counted = count(run.id)
            res = {**res, "api_requests": api_requests(sampler)}
            base = scale.run_child({**base_job, "label": label + " baseline"}, cap, log_path) \
                if base_job and not res.get("error") else None
            return res, base, written, api_latency(sampler), counted

        # ---------------------------------------------------------------- ingest (both stores)
        ingest_base = scale.run_child({"kind": "ingest-baseline", "pool_file": str(pool_file), "label": "ingest"},
                                      cap, log_path)
        manifests: dict[str, str] = {}
        for kind in (args.real_store, *(k for k in stores if k != args.real_store)):
            tasks_before, before = settled_total(quiet=4), objects()
            res = scale.run_child({"kind": "real-ingest", "store": stores[kind], "shard_size": args.shard_size,
                                   "pool_file": str(pool_file), "label": f"ingest {kind}"}, cap, log_path)
            written = objects() - before
            table.add(f"ingest ({'moto S3' if kind == 's3' else 'local folder'})", res, written, ingest_base,
                      task_runs=settled_total(quiet=4) - tasks_before)
            if res.get("error"):
                return 1
            manifests[kind] = res["manifest"]
        manifest = manifests[args.real_store]
        if stop_after == "ingest":
            return 0

        # ---------------------------------------------------------------- score flow, per scorer
        from syllabus_flows.pipeline import pipeline
        from syllabus_flows.score import score

        configs = scale.scorer_configs(args)
        methods = [m for m in args.methods.split(",") if m]
        if args.compare == "only":
            methods = []  # the compare's arms cover every method
        scored = set(methods) | (set(COMPARE_RECIPES) if args.compare else set())
        wanted = sorted({s for m in scored for s in scale.recipes("")[m]["scorers"]})
        score_manifests: dict[str, str] = {}
        for name in wanted:
            params = {"pool_manifest": manifest, "scorers": {name: configs[name]}, "model": model, "store": store}
            base = {"kind": "score-baseline", "store": store, "manifest": manifest, "scorer": name,
                    "config": configs[name], "scratch": str(work / "baseline" / name)}
            if args.score_baselines is not None and name not in args.score_baselines.split(","):
                base = None
            res, base_res, written, api_s, by_task = flow_stage(
                f"score {name}", score, params, {"kind": "real-score", "scorer": name}, base,
                lambda run_id: prefect_tasks.settled_task_runs(run_id, quiet=10)[0])
            note = ", ".join(f"{t} {c}" for t, c in sorted(by_task.items()))
            table.add(f"score {name}", {**res, "task_runs_by_task": by_task}, written, base_res,
                      note=(json.dumps(configs[name]) + " " if configs[name] else "") + note,
                      task_runs=sum(by_task.values()), api=api_s)
            if res.get("error") or res.get("missing"):
                return 1
            score_manifests[name] = res["score_manifest"]
        if stop_after == "score":
            return 0

        # ---------------------------------------------------------------- pipeline flow, stop_after=select, per method
        (work / "recipes").mkdir(exist_ok=True)
        failed = False
        recipe_paths: dict[str, Path] = {}
        for method, spec in scale.recipes("synthetic_difficulty_embedding").items():
            recipe_paths[method] = work / "recipes" / f"synthetic-{method}.yaml"
            recipe_paths[method].write_text(yaml.safe_dump(spec["recipe"], sort_keys=False))
        pipeline_rows: list[dict[str, Any]] = []
        for method in methods:
            spec = scale.recipes("synthetic_difficulty_embedding")[method]
            path = recipe_paths[method]
            if method == "3ds":
                budget = {"count": args.kcenter_budget}
            elif method == "random":
                budget = {"count": min(args.export_rows, args.n // 2)}
            else:
                budget = {"ratio": spec["recipe"]["budget"]["ratio"]}
            params = {"pool": [str(pool_file)], "shard_size": args.shard_size, "model": model, "methods": [str(path)],
                      "budget": budget, "store": store, "scorer_configs": {s: configs[s] for s in spec["scorers"]},
                      "selector_overrides": {}, "benches": [], "stop_after": "select", "evaluate_base": False,
                      "tracking_uri": tracking_uri, "experiment": f"scale-{args.n}-{run_id}"}
            base = {"kind": "select-baseline", "store": store, "manifest": manifest, "sort": spec["sort"],
                    "score_manifests": [score_manifests[s] for s in spec["scorers"]]}
            tasks_before = settled_total(quiet=4)
            res, base_res, written, api_s, total = flow_stage(
                f"select {method}", pipeline, {"params": params},
                {"kind": "real-pipeline", "tracking_uri": tracking_uri}, base, lambda run_id: settled_total())
            label = f"select {method} (synthetic, pipeline)"
            if res.get("error"):
                table.add(label, res, written, None)
                failed = True
                continue
            timings = res["timings"]
            arm = next(k for k in timings if k not in ("ingest_seconds", "score_seconds", "total_seconds"))
            ml = res["mlflow"]
            arts = ", ".join(f"{Path(p).name} {a.get('rows', '-')} rows" for p, a in sorted(ml["artifacts"].items())
                             if p.endswith(".parquet"))
            costs = res["score_costs"].values()
            note = (f"flow {res['seconds']:.1f}s (ingest {timings['ingest_seconds']:.1f}s, score {timings['score_seconds']:.1f}s: "
                    f"{sum(c['shards_scored'] for c in costs)} shards scored, {sum(c['shards_cached'] for c in costs)} cached); "
                    f"MLflow: {arts}")
            table.add(label, {**res, "seconds": timings[arm], "flow_process_seconds": res["seconds"]}, written, base_res,
                      note=note, task_runs=total - tasks_before, api=api_s)
            pipeline_rows.append(table.rows[-1])
            print(f"    {method}: {ml['n_selected']:,.0f} of {ml['n_candidates']:,.0f}; MLflow run {ml['run_id']} "
                  f"({ml['status']}): " + ", ".join(sorted(ml["artifacts"])), flush=True)
            parquet = [p for p in ml["artifacts"] if p.endswith(".parquet")]
            if ml["status"] != "FINISHED" or len(parquet) < 2:
                print(f"    {method}: expected the subset and the why-table as Parquet artifacts of a FINISHED run",
                      flush=True)
                failed = True
        if args.compare:
            failed |= not compare_stage(args, table, flow_stage, recipe_paths, configs, score_manifests, pool_file,
                                        model, store, manifest, tracking_uri, run_id, cap, log_path, pipeline_rows)
        return 1 if failed else 0
    finally:
        for proc in reversed(servers):
            prefect_tasks.stop_server(proc)


# ------------------------------------------------------------------------------ compare
COMPARE_RECIPES = ("3ds", "diq", "ifd", "less")  # the synthetic recipes; random and full are the shipped ones
WINDOWS = {"easy": [0.0, 50.0], "medium": [25.0, 75.0], "hard": [50.0, 100.0]}  # CompareParams' default


def compare_stage(args: argparse.Namespace, table: Any, flow_stage: Any, recipe_paths: dict[str, Path],
                  configs: dict[str, dict[str, Any]], score_manifests: dict[str, str], pool_file: Path, model: str,
                  store: str, manifest: str, tracking_uri: str, run_id: str, cap: float, log_path: Path,
                  pipeline_rows: list[dict[str, Any]]) -> bool:
    """The ``compare`` flow (what ``syllabus compare --stop-after select`` runs) with every arm
    of the default compare plus LESS: the synthetic 3DS, DIQ, IFD and LESS recipes (by path),
    the shipped ``random`` over ``--seeds`` seeds and ``full``, and the 3DS difficulty windows
    (easy/medium/hard: the synthetic 3DS recipe's band selector moved, ``window_method`` its
    path), one budget for all (``--kcenter-budget``). Baseline: for each arm, reading its score
    tables (the pool's for random and full) and sorting them, measured once per recipe and
    counted once per arm. Its MLflow parent and nested arm runs are checked on the server."""
    import scale
    from syllabus.pipeline.config import CompareParams
    from syllabus.tracking.names import method_label
    from syllabus_flows.compare import compare

    seeds = CompareParams.model_fields["seeds"].default  # the default compare's random seeds (3)

    methods = [str(recipe_paths[m]) for m in COMPARE_RECIPES] + ["random", "full"]
    window_method = str(recipe_paths["3ds"])
    budget = args.kcenter_budget
    params = {"pool": [str(pool_file)], "shard_size": args.shard_size, "model": model, "methods": methods,
              "budget": {"count": budget}, "store": store, "scorer_configs": {s: configs[s] for s in score_manifests},
              "selector_overrides": {}, "benches": [], "stop_after": "select", "evaluate_base": False,
              "tracking_uri": tracking_uri, "experiment": f"scale-{args.n}-{run_id}-compare",
              "seeds": seeds, "windows": WINDOWS, "window_method": window_method}
    # arm name -> (recipe whose tables the baseline reads, selected rows expected; None: every candidate)
    threeds = method_label(window_method)
    arms: dict[str, tuple[str, int | None]] = {method_label(str(recipe_paths[m])): (m, budget) for m in COMPARE_RECIPES}
    arms.update({f"random@{k}": ("random", budget) for k in range(seeds)})
    arms["full"] = ("full", None)
    arms.update({f"{threeds}-{w}": ("3ds", budget) for w in WINDOWS})

    tasks_before = settled_total(quiet=4)
    res, _, written, api_s, total = flow_stage(
        "compare", compare, {"params": params}, {"kind": "real-compare", "tracking_uri": tracking_uri}, None,
        lambda _run: settled_total())
    label = f"compare, {len(arms)} arms (synthetic)"
    if res.get("error"):
        table.add(label, res, written, None)
        return False

    # the baseline: each recipe's score tables read and sorted, once per recipe, counted per arm
    base_runs: dict[str, dict[str, Any]] = {}
    for recipe in sorted({r for r, _ in arms.values()}):
        spec = scale.recipes("synthetic_difficulty_embedding")[recipe] if recipe != "full" else \
            {"scorers": [], "sort": "sample_id"}
        base_runs[recipe] = scale.run_child({"kind": "select-baseline", "store": store, "manifest": manifest,
                                             "sort": spec["sort"], "label": f"compare baseline {recipe}",
                                             "score_manifests": [score_manifests[s] for s in spec["scorers"]]},
                                            cap, log_path)
    base_ok = all(not b.get("error") for b in base_runs.values())
    base = {"seconds": sum(base_runs[r]["seconds"] for r, _ in arms.values()),
            "peak_gb": max(b["peak_gb"] for b in base_runs.values()),
            "per_recipe": {r: round(b["seconds"], 2) for r, b in base_runs.items()}} if base_ok else None

    timings, ml = res["timings"], res["mlflow"]
    arm_seconds = {k.removesuffix("_seconds"): v for k, v in timings.items()
                   if k not in ("ingest_seconds", "score_seconds", "total_seconds")}
    selected = ", ".join(f"{name} {ml['arms'][name]['n_selected']:,.0f}" if name in ml["arms"] else f"{name} -"
                         for name in arms)
    note = (f"flow {res['seconds']:.1f}s (ingest {timings['ingest_seconds']:.1f}s, score {timings['score_seconds']:.1f}s, "
            f"arms {sum(arm_seconds.values()):.1f}s); selected: {selected}")
    if pipeline_rows:
        note += (f"; the per-method pipeline flows above: arms {sum(r['seconds'] for r in pipeline_rows):.1f}s, "
                 f"flows {sum(r['detail']['flow_process_seconds'] for r in pipeline_rows):.1f}s")
    table.add(label, {**res, "arm_seconds": arm_seconds, "baseline": base}, written, base, note=note,
              task_runs=total - tasks_before, api=api_s)
    for name, (recipe, _) in arms.items():
        arm = ml["arms"].get(name)
        if arm:
            arts = ", ".join(f"{Path(p).name} {a.get('rows', '-')} rows, {a['bytes'] / 1e6:.1f} MB"
                             for p, a in sorted(arm["artifacts"].items()) if p.endswith(".parquet"))
            print(f"    {name}: {arm['n_selected']:,.0f} of {arm['n_candidates']:,.0f} in {arm_seconds.get(name, 0):.1f}s; "
                  f"MLflow run {arm['run_id']} ({arm['status']}): {arts}; stages: "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in arm["stages"].items()), flush=True)
    print(f"    compare: MLflow parent run {ml['run_id']} ({ml['status']}): "
          + ", ".join(ml["comparison"]) + f"; baseline per recipe (s): {base['per_recipe'] if base else '-'}", flush=True)
    problems = compare_problems(ml, {name: want for name, (_, want) in arms.items()})
    for problem in problems:
        print(f"    compare: {problem}", flush=True)
    return not problems and base_ok

"""``python -m syllabus_flows.results``: the flows' persisted results in the shared store.

Every Syllabus flow persists its result (the stage flows and score as JSON, for the next
stage's form and for Retry). By default Prefect writes them to the worker's own disk
(``$PREFECT_HOME/storage``), where no other machine can read them. With a store URL such as
``s3://bucket/store`` this saves a Prefect ``RemoteFileSystem`` block, ``syllabus-results``,
at ``<store>/prefect-results`` and makes it the Prefect server's default result storage: every
flow run of every worker then writes its results there, and anything that reads a run's result
(another worker, a retry, a client on another machine) reads it from there. No flow names a
storage of its own, so none needs an edit. The block holds no credentials: each machine reads
the bucket with its own environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), as it
does for the store.

A local store (a folder) leaves Prefect's default (each worker's disk) and says so; ``--clear``
gives that default back.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

BLOCK_NAME = "syllabus-results"
FOLDER = "prefect-results"


def result_storage_url(store: str) -> str | None:
    """Where results go for ``store``: ``<store>/prefect-results`` for a URL (``s3://``, ``gs://``
    ...), None for a local folder (Prefect's default, the worker's disk)."""
    from syllabus.inputs import local_path
    from syllabus.store.credentials import split_credentials

    clean, _ = split_credentials(store)  # credentials never go into a block
    if local_path(clean) is not None:
        return None
    return f"{clean.rstrip('/')}/{FOLDER}"


def share_results(store: str) -> dict[str, Any]:
    """Save the ``syllabus-results`` block for ``store`` and make it the server's default result
    storage; returns what was done (``{"url", "block"}``, or ``{"url": None}`` for a local store)."""
    from prefect.client.orchestration import get_client
    from prefect.filesystems import RemoteFileSystem

    url = result_storage_url(store)
    if url is None:
        return {"url": None, "block": None}
    block_id = RemoteFileSystem(basepath=url).save(BLOCK_NAME, overwrite=True)
    with get_client(sync_client=True) as client:
        client.update_server_default_result_storage(block_id)
    return {"url": url, "block": f"remote-file-system/{BLOCK_NAME}", "block_id": str(block_id)}


def clear_shared_results() -> None:
    """Give the server's default result storage back to Prefect (each worker's disk)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.clear_server_default_result_storage()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m syllabus_flows.results",
        description="Make the Prefect server keep every flow run's results in the shared store (<store>/prefect-results).")
    parser.add_argument("--store", default=os.environ.get("SYLLABUS_STORE", ""),
                        help="the shared store URL (default $SYLLABUS_STORE), e.g. s3://syllabus/store")
    parser.add_argument("--clear", action="store_true", help="give the default back to Prefect (each worker's disk)")
    args = parser.parse_args(argv)
    if args.clear:
        clear_shared_results()
        print("flow results: Prefect's default again (each worker's $PREFECT_HOME/storage)")
        return 0
    if not args.store:
        parser.error("give --store URL or set SYLLABUS_STORE (e.g. s3://syllabus/store)")
    done = share_results(args.store)
    if done["url"] is None:
        print(f"flow results: {args.store} is a local folder, so results stay on each worker's disk "
              "($PREFECT_HOME/storage); give an s3:// store to share them")
        return 0
    print(f"flow results: every flow run now keeps its results in {done['url']} (block {done['block']}, "
          "the Prefect server's default result storage)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

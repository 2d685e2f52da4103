"""Library log lines in the run's logs in the Prefect UI.

``PREFECT_LOGGING_EXTRA_LOGGERS=syllabus,flows,tasks`` (set by the CLI, the deployments' job
variables and the compose worker) attaches Prefect's API handler to those loggers, but Prefect
3.8 leaves their level unset, so they inherit the root's WARNING and every INFO line (scores
per shard, cache hits, progress) is dropped before it reaches a handler. Importing
``syllabus_flows`` (this folder, installed under that name) sets the level, and attaches the
handler where the variable was not set, so a flow run started any way (CLI, deployment,
worker, script, test) shows them.

``import prefect`` alone configures nothing in Prefect 3.8: its package imports lazily, and
Prefect's logging is set up when ``prefect.main`` is first imported (``from prefect import
flow``, ``prefect.flow_engine``). Importing ``syllabus_flows`` before anything else of Prefect
(the CLI does, a script does) then found no API handler to copy; and where the variable's value
is not what Prefect reads (set after Prefect's settings were read: a settings context, such as
the test harness's, or a script that sets it late) the library lines never reached the run.
So the handler is taken after making sure Prefect's logging is configured.
"""

from __future__ import annotations

import logging

LIBRARY_LOGGERS = ("syllabus", "flows", "tasks")
EXTRA_LOGGERS_ENV = ",".join(LIBRARY_LOGGERS)


def send_library_logs_to_prefect(level: int = logging.INFO) -> None:
    """Give the library loggers Prefect's API handler (once) and a level that lets INFO through."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import APILogHandler

    ensure_logging_setup()  # Prefect's own handlers exist only once its logging is configured
    # Only Prefect's API handler: the list can hold others (pytest's capture handlers, seen in
    # the test suite), and a copied console or capture handler shows every library line twice.
    handlers = [h for h in logging.getLogger("prefect.extra").handlers if isinstance(h, APILogHandler)]
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)

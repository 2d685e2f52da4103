"""What a partially failed run carries: torch- and Prefect-free, for the CLI and the flows."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

# The name of the Failed state a run with something missing ends in (a task's or a flow's).
PARTIAL = "Partially failed"


def name_missing(missing: Iterable[Mapping[str, Any]]) -> str:
    """``shard (its error)`` for each missing shard, ``;``-separated, each error cut at 200 characters."""
    return "; ".join(f"{m['shard']} ({m['error'][:200]})" for m in missing)


class PartialFailure(RuntimeError):
    """A run that finished with something missing (shards, arms): its message says what and
    how to retry only that; ``result`` holds everything it did produce.

    It is the data of the run's ``Failed`` state ("Partially failed"), because whatever asks
    that state for its result (Prefect's engine does, at the end of every deployment run) must
    get an exception: given a dict it raised ``TypeError: Unexpected result for failed state
    ... dict cannot be resolved into an exception`` into the run's logs instead."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # pickled with its result (a JSON result keeps the message only)
        return type(self), (str(self), self.result)

"""A scorer for fault-injection tests: cheap, deterministic, and told to fail from outside.

Faults are driven by files (not by its config, which is part of the cache key), so a test
can "fix" a fault and rerun with the same keys:
- ``<fault_dir>/fail-<first sample id>``: scoring that shard raises every time;
- ``<fault_dir>/flaky-<first sample id>``: it raises on the first attempt only;
- ``<fault_dir>/attempts.log``: one line per attempt (first sample id), to count work;
- ``sleep_seconds``: time per shard, so a test can kill the process mid-run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from syllabus.scoring.base import Scorer, ScorerConfig


class FaultConfig(ScorerConfig):
    fault_dir: str
    sleep_seconds: float = 0.0


class FaultScorer(Scorer):
    name: ClassVar[str] = "fault"
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = FaultConfig
    calibrate: ClassVar[bool] = False  # its calls log attempts and trip faults: a plan's calibration must not call it

    def columns(self) -> list[str]:
        return ["fault_chars", "fault_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        faults = Path(self.config.fault_dir)
        first = table.column("sample_id")[0].as_py()
        with open(faults / "attempts.log", "a") as fh:
            fh.write(first + "\n")
        if (faults / f"fail-{first}").exists():
            raise RuntimeError(f"injected permanent fault for the shard starting at {first}")
        flaky = faults / f"flaky-{first}"
        if flaky.exists():
            flaky.unlink()
            raise ConnectionError(f"injected transient fault for the shard starting at {first}")
        time.sleep(self.config.sleep_seconds)
        outputs = table.column("output").to_pylist()
        return pa.table({
            "sample_id": table.column("sample_id"),
            "fault_chars": pa.array([float(len(o)) for o in outputs]),
            "fault_status": pa.array(["ok"] * len(outputs)),
        })

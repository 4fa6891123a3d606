"""bench/gpu_truth.py runs the trainer on each feasible plan and reads the truth from its
progress events; on a CPU the same code path as on a GPU (the device machine runs it there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_truth_script_measures_every_plan_it_runs() -> None:
    done = subprocess.run([sys.executable, "bench/gpu_truth.py", "--device", "cpu", "--model",
                           "tiny", "--steps", "3", "--max-plans", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line.removeprefix("RECORD "))
               for line in done.stdout.splitlines() if line.startswith("RECORD ")]
    assert len(records) == 2
    for record in records:
        assert "error" not in record, record
        assert record["step_time_s"] > 0 and record["tokens_per_s"] > 0
        assert record["peak_rss_bytes"] > 0 and record["predicted_memory_bytes"] > 0
        assert record["mfu"] is not None and 0 < record["mfu"] < 1
    assert "single world=1" in done.stdout

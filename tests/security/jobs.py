"""Jobs the security suite submits, and a look at their ranks from outside (as root, /proc)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.builders import spec_dict

WAIT_S = 120.0


def long_job(name: str = "long", **overrides: Any) -> dict[str, Any]:
    """A tiny pretraining job that keeps its ranks alive long enough to look at them."""
    return spec_dict(name=name, work={"steps": 100_000, "eval_batches": 1},
                     checkpoint={"interval_steps": 100_000, "keep": 1},
                     resources={"devices": 1}, **overrides)


def rank_pids(job_id: int) -> list[int]:
    """Live rank processes of the job's first attempt (their command names its job file)."""
    mark, pids = f"/job-{job_id}/attempt-1.json".encode(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if mark in cmdline and b"workers.jobs.run" in cmdline and b"torch.distributed" \
                not in cmdline:
            pids.append(int(entry))
    return pids


def wait_for_ranks(job_id: int, server_log: Any) -> list[int]:
    deadline = time.monotonic() + WAIT_S
    while not (pids := rank_pids(job_id)):
        assert time.monotonic() < deadline, f"no rank of job {job_id}:\n{server_log()}"
        time.sleep(0.3)
    return pids


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").partition("=")[::2]
                for item in raw.split(b"\0") if item)


def real_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def readable_file(path: Path, text: str) -> Path:
    """A file every identity may read, whatever this process's umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)
    path.parent.chmod(0o755)
    return path

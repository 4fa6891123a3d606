"""End to end through the real `corral` CLI: SQLite, the scheduler, torchrun ranks, DDP on gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builders import spec_dict

CORRAL = [sys.executable, "-m", "api.cli"]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CORRAL_HOME=str(home), CORRAL_LOCAL_DEVICES="2", PYTHONUNBUFFERED="1")
    env.pop("CORRAL_DATABASE_URL", None)
    return env


def _write_job(tmp_path: Path, **overrides: Any) -> Path:
    spec = spec_dict(**overrides)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _progress(home: Path, job_id: int = 1) -> list[dict[str, Any]]:
    path = home / "runs" / f"job-{job_id}" / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _show(home: Path, job_id: int = 1) -> str:
    return subprocess.run(
        [*CORRAL, "show", str(job_id)], env=_env(home), capture_output=True, text=True, check=True
    ).stdout


TINY_TRAINING = dict(
    name="e2e",
    model__config={
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
    },
    data__seq_len=32,
    data__generated_documents=400,
    batch__global_batch=8,
    optimizer__lr=3e-3,
    optimizer__warmup_steps=5,
    resources__devices=2,
)


@pytest.mark.slow
def test_corral_run_trains_a_tiny_model_with_two_ranks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    job = _write_job(tmp_path, **TINY_TRAINING, work__steps=60, checkpoint__interval_steps=20)
    done = subprocess.run(
        [*CORRAL, "run", str(job), "--poll-s", "0.3"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCEEDED" in done.stdout
    steps = [e for e in _progress(home) if e["event"] == "step"]
    assert steps[-1]["step"] == 60
    first = steps[0]["loss"]
    last = sum(e["loss"] for e in steps[-10:]) / 10
    assert last < 0.75 * first, f"loss did not fall clearly: {first:.3f} -> {last:.3f}"
    checkpoints = sorted((home / "runs" / "job-1" / "checkpoints").glob("step-*"))
    assert checkpoints and not any(p.name.endswith(".tmp") for p in checkpoints)
    shown = _show(home)
    assert "world=2" in shown and "RUNNING → SUCCEEDED" in shown
    # the finished job's measured step times recalibrated η for the next plan
    assert "calibration cpu/" in shown and "η" in shown
    pools = subprocess.run(
        [*CORRAL, "pools"], env=_env(home), capture_output=True, text=True, check=True
    ).stdout
    assert "(pool)" in pools  # the local CPU pool plans with its own measured peak
    queue = subprocess.run(
        [*CORRAL, "queue", "--all"], env=_env(home), capture_output=True, text=True, check=True
    ).stdout
    assert "SUCCEEDED" in queue


def _rank_pids(job_file: Path) -> list[int]:
    """Rank processes (torchrun sets LOCAL_RANK for them, not for itself) of one job file."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        is_rank = any(item.startswith(b"LOCAL_RANK=") for item in environ)
        if is_rank and b"workers.jobs.run" in cmdline and str(job_file).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_killed_rank_fails_the_attempt_and_the_retry_resumes_from_checkpoint(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    job = _write_job(tmp_path, **TINY_TRAINING, work__steps=400, checkpoint__interval_steps=10)
    log = tmp_path / "corral-run.log"
    with log.open("w") as sink, subprocess.Popen(
        [*CORRAL, "run", str(job), "--poll-s", "0.3"], env=_env(home), stdout=sink,
        stderr=subprocess.STDOUT,
    ) as runner:
        try:
            deadline = time.monotonic() + 180
            while not any(e["event"] == "checkpoint" for e in _progress(home)):
                assert time.monotonic() < deadline, "no checkpoint within 180 s"
                assert runner.poll() is None, log.read_text()
                time.sleep(0.5)
            ranks = _rank_pids(home / "runs" / "job-1" / "attempt-1.json")
            assert len(ranks) == 2, f"expected 2 rank processes, found {ranks}"
            os.kill(max(ranks), signal.SIGKILL)
            runner.wait(timeout=400)
        finally:
            if runner.poll() is None:
                runner.send_signal(signal.SIGINT)
                runner.wait(60)
    output = log.read_text()
    assert runner.returncode == 0, output
    shown = _show(home)
    assert "RUNNING → FAILED" in shown and "FAILED → PENDING" in shown
    assert "resuming from" in shown
    retry = json.loads((home / "runs" / "job-1" / "attempt-2.json").read_text())
    assert retry["resume_from"] and "step-" in retry["resume_from"]
    resumed_step = int(Path(retry["resume_from"]).name.split("-")[1])
    starts = [e for e in _progress(home) if e["event"] == "start"]
    assert [s.get("attempt") for s in starts] == [1, 2]
    assert starts[1]["step"] == resumed_step > 0
    assert _rank_pids(home / "runs" / "job-1" / "attempt-1.json") == []


@pytest.mark.slow
def test_ctrl_c_cancels_the_job_and_leaves_no_rank_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    job = _write_job(tmp_path, **TINY_TRAINING, work__steps=2000)
    log = tmp_path / "corral-run.log"
    with log.open("w") as sink, subprocess.Popen(
        [*CORRAL, "run", str(job), "--poll-s", "0.3"], env=_env(home), stdout=sink,
        stderr=subprocess.STDOUT,
    ) as runner:
        deadline = time.monotonic() + 180
        while not any(e["event"] == "step" for e in _progress(home)):
            assert time.monotonic() < deadline, "training never started"
            assert runner.poll() is None, log.read_text()
            time.sleep(0.5)
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=120) == 130, log.read_text()
    assert "job 1 CANCELLED" in log.read_text()
    assert "RUNNING → CANCELLED" in _show(home)
    assert _rank_pids(home / "runs" / "job-1" / "attempt-1.json") == []

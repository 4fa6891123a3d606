"""The training core on real ranks: torchrun, two processes, DDP over gloo on the CPU.

What torch 2.13's torchrun does with its ranks' fate, as these tests pin down:

* ranks that all exit 0 → torchrun exits 0;
* SIGTERM to torchrun → it forwards SIGTERM to every rank (each rank runs in its own session,
  so a signal to torchrun's process group reaches only torchrun), waits up to
  ``--shutdown-timeout`` (30 s) for them, then raises and exits **1**, whatever the ranks
  returned. The preemption is recognisable by the attempt's ``preempted`` progress event,
  which rank 0 writes only after the checkpoint is complete;
* a rank's own status (75 here) survives only without torchrun in between, which the last
  test checks by starting the ranks itself.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.domain.plan import Plan
from scheduler.domain.spec import parse_spec
from scheduler.gangs.protocol import EXIT_PREEMPTED, JobFile
from tests.builders import spec_dict
from tests.integration import gang
from workers.core.checkpoint_layout import checkpoint_name, latest_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2
TINY = dict(
    model__config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "intermediate_size": 172,
                   "max_position_embeddings": 64},
    tokenizer={"kind": "bpe", "vocab_size": 512},
    data={"source": "generated", "seq_len": 64, "generated_documents": 400},
    batch={"global_batch": 8, "micro_batch": 2},  # 2 ranks × 2 micro-steps × 2 sequences
    optimizer={"lr": 3e-3, "warmup_steps": 5},
    seed=1,
)


def _job_file(run_dir: Path, steps: int, interval: int, attempt: int = 1,
              resume_from: Path | None = None) -> Path:
    spec = parse_spec(spec_dict(**TINY, work={"steps": steps, "eval_batches": 4},
                                checkpoint={"interval_steps": interval, "keep": 3}))
    plan = Plan.data_parallel(WORLD_SIZE, spec.batch.global_batch, micro_batch=2)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"attempt-{attempt}.json"
    JobFile(job_id=1, attempt=attempt, spec=spec.model_dump(mode="json"), plan=plan.to_dict(),
            run_dir=str(run_dir),
            resume_from=str(resume_from) if resume_from else None).write(path)
    return path


def _torchrun(job_file: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD_SIZE}", "-m", "workers.jobs.run", str(job_file)]
    with log.open("wb") as sink:
        # A session of its own, as a backend launches it: the test can signal its whole group.
        return subprocess.Popen(command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait(process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"ranks still running after {timeout_s} s; log:\n{log.read_text()[-4000:]}")


def test_two_ranks_train_a_tiny_model_whose_loss_falls(tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "ranks.log"

    status = _wait(_torchrun(_job_file(run_dir, steps=100, interval=50), log), log)

    assert status == 0, log.read_text()[-4000:]
    events = gang.events(run_dir, attempt=1)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-2:] == ["eval", "done"]
    losses = gang.losses(events)
    assert sorted(losses) == list(range(1, 101))
    # A uniform guess over 512 ids costs ln 512 ≈ 6.2 nats; the stories are learnable far below.
    assert losses[1] == pytest.approx(math.log(512), abs=0.3)
    last_ten = [losses[step] for step in range(91, 101)]
    assert sum(last_ten) / 10 < 0.5 * losses[1]  # measured: about 0.23
    (eval_event,) = [event for event in events if event["event"] == "eval"]
    assert eval_event["eval_loss"] < 0.7 * losses[1]
    assert all(event["tokens_per_s"] > 0 for event in events if event["event"] == "step")
    saved = [event["path"] for event in events if event["event"] == "checkpoint"]
    assert [Path(path).name for path in saved] == [checkpoint_name(50), checkpoint_name(100)]
    assert latest_checkpoint(run_dir / "checkpoints") == Path(saved[-1])
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()


def test_a_resumed_run_repeats_the_uninterrupted_runs_losses(tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "ranks.log"
    assert _wait(_torchrun(_job_file(run_dir, steps=16, interval=8), log), log) == 0

    # The scheduler's retry: attempt 2 of the same job, same run folder, from step 8.
    resume_from = run_dir / "checkpoints" / checkpoint_name(8)
    job_file = _job_file(run_dir, steps=16, interval=8, attempt=2, resume_from=resume_from)
    assert _wait(_torchrun(job_file, log), log) == 0, log.read_text()[-4000:]

    uninterrupted, resumed = gang.events(run_dir, attempt=1), gang.events(run_dir, attempt=2)
    assert resumed[0]["event"] == "start" and resumed[0]["step"] == 8
    assert sorted(gang.losses(resumed)) == list(range(9, 17))
    for step, loss in gang.losses(resumed).items():
        assert loss == pytest.approx(gang.losses(uninterrupted)[step], abs=1e-6), step
    assert resumed[-1]["eval_loss"] == pytest.approx(uninterrupted[-1]["eval_loss"], abs=1e-6)


def test_sigterm_to_torchrun_checkpoints_and_reports_preempted(tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "ranks.log"
    torchrun = _torchrun(_job_file(run_dir, steps=5000, interval=1000), log)
    gang.wait_for_step(run_dir, 12, [torchrun])

    os.killpg(torchrun.pid, signal.SIGTERM)
    status = _wait(torchrun, log, timeout_s=60)

    # torchrun turns any signal it receives into its own exit status 1 (see module docstring).
    assert status == 1, log.read_text()[-4000:]
    events = gang.events(run_dir, attempt=1)
    assert events[-1]["event"] == "preempted"
    assert "done" not in {event["event"] for event in events}
    stopped_at = events[-1]["step"]
    assert stopped_at >= 12 and max(gang.losses(events)) == stopped_at
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    assert checkpoint == Path(events[-1]["path"]) == run_dir / "checkpoints" / checkpoint_name(
        stopped_at)
    assert json.loads((checkpoint / "meta.json").read_text())["step"] == stopped_at
    assert sorted(p.name for p in checkpoint.glob("rng-rank-*.pt")) == [
        "rng-rank-0.pt", "rng-rank-1.pt"]
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


def test_sigterm_to_one_rank_stops_every_rank_with_exit_75(tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "ranks.log"
    job_file = _job_file(run_dir, steps=5000, interval=1000)
    port = str(gang.free_port())
    ranks = []
    with log.open("wb") as sink:
        for rank in range(WORLD_SIZE):
            # The variables torchrun would set; no agent in between to rewrite exit statuses.
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                       LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD_SIZE),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            ranks.append(subprocess.Popen(
                [sys.executable, "-m", "workers.jobs.run", str(job_file)], cwd=REPO_ROOT,
                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
    gang.wait_for_step(run_dir, 8, ranks)

    # Only rank 1 hears the signal; rank 0 learns of it in the next step's vote.
    ranks[1].send_signal(signal.SIGTERM)

    assert [_wait(rank, log, timeout_s=60) for rank in ranks] == [EXIT_PREEMPTED] * WORLD_SIZE
    events = gang.events(run_dir, attempt=1)
    assert events[-1]["event"] == "preempted"
    assert latest_checkpoint(run_dir / "checkpoints") == Path(events[-1]["path"])

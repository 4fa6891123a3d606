"""One gang of ranks that trains the same tiny job under several plans, one after the other.

Started by ``torch.multiprocessing`` from ``tests/integration/test_equivalence.py``. Each case
builds the job exactly as a real rank does (:func:`workers.jobs.pretrain.build_trainer`), trains
``STEPS`` steps with a checkpoint every ``RESUME_FROM`` steps, then builds a fresh trainer,
restores the middle checkpoint and trains to the end again as attempt 2: the test compares
attempt 1 across plans (equivalence) and attempt 2 with attempt 1 (resume). Progress events
land in ``root/CASE/progress.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from scheduler.domain.plan import Plan
from scheduler.domain.spec import JobSpec, parse_spec
from scheduler.gangs.protocol import JobFile
from tests.builders import spec_dict
from workers.core.checkpoint_layout import checkpoint_name
from workers.core.distributed import DistContext
from workers.core.preemption import StopRequest
from workers.jobs.pretrain import build_trainer

STEPS = 10
RESUME_FROM = 5
GLOBAL_BATCH = 8
SPEC: dict[str, Any] = spec_dict(
    model__config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "intermediate_size": 128,
                   "max_position_embeddings": 64},
    data={"source": "generated", "seq_len": 32, "generated_documents": 60},
    work={"steps": STEPS, "eval_batches": 2},
    batch={"global_batch": GLOBAL_BATCH},
    # Clipping at 0.5 is active in these steps, so the gradient norm under every plan counts.
    optimizer={"lr": 3e-3, "warmup_steps": 2, "grad_clip": 0.5},
    checkpoint={"interval_steps": RESUME_FROM, "keep": 2},
    seed=3,
)


def _job_file(root: Path, case: str, plan: Plan, attempt: int) -> tuple[JobFile, JobSpec]:
    spec = parse_spec(SPEC)
    run_dir = root / case
    resume = run_dir / "checkpoints" / checkpoint_name(RESUME_FROM) if attempt > 1 else None
    job = JobFile(job_id=1, attempt=attempt, spec=spec.model_dump(mode="json"),
                  plan=plan.to_dict(), run_dir=str(run_dir),
                  resume_from=str(resume) if resume else None)
    return job, spec


def _run_case(root: Path, case: str, plan: Plan, ctx: DistContext) -> None:
    for attempt in (1, 2):
        job, spec = _job_file(root, case, plan, attempt)
        trainer = build_trainer(job, spec, plan, ctx, StopRequest())
        start_step = trainer.restore(Path(job.resume_from)) if job.resume_from else 0
        trainer.run(start_step)


def run_rank(rank: int, world_size: int, port: int, root: str, cases: dict[str, dict[str, Any]]
             ) -> None:
    """Join a gloo gang of ``world_size`` and run every case (name → ``Plan`` fields) in order."""
    # One thread per rank: two ranks and the single-process reference share two cores.
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    ctx = DistContext(rank=rank, world_size=world_size, local_rank=rank,
                      local_world_size=world_size, device=torch.device("cpu"), backend="gloo")
    try:
        for case, fields in cases.items():
            _run_case(Path(root), case, Plan.from_dict({"world_size": world_size, **fields}), ctx)
    finally:
        dist.destroy_process_group()

"""Entry point of every rank: ``python -m workers.jobs.run JOB_FILE`` (started by torchrun).

Exit status: 0 when the job finished, ``EXIT_PREEMPTED`` (75) when it stopped on SIGTERM after
a complete checkpoint, ``EXIT_SPEC_ERROR`` (78) when the spec or the files it names are wrong
(outside the tenant's roots, unreadable, malformed: no retry helps), 2 for a wrong command
line, and 1 for any other error (Python's status for an
uncaught exception, whose traceback goes to the rank's log).

Under torchrun only the ranks' statuses carry this meaning: torchrun itself exits 1 whenever a
rank exits non-zero, 75 included, so a backend reads preemption from the ``preempted`` progress
event of the attempt rather than from torchrun's status (see :mod:`scheduler.gangs.protocol`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from scheduler.domain.errors import CorralError, SpecError
from scheduler.domain.plan import Plan
from scheduler.domain.roots import AllowedRoots, check_spec_files
from scheduler.domain.spec import JobKind, JobSpec, parse_spec
from scheduler.gangs.protocol import EXIT_PREEMPTED, EXIT_SPEC_ERROR, JobFile
from workers.core.distributed import DistContext, init_distributed, shutdown_distributed
from workers.core.preemption import StopRequest
from workers.core.trainer import TrainResult

JobRunner = Callable[[JobFile, JobSpec, Plan, DistContext, StopRequest], TrainResult]


class JobKindNotImplementedError(CorralError, NotImplementedError):
    """A valid job kind that the training ranks cannot run yet."""


def runner_for(kind: JobKind) -> JobRunner:
    """The function that runs one attempt of a job of ``kind`` on this rank."""
    if kind is JobKind.PRETRAIN:
        from workers.jobs.pretrain import run_pretrain

        return run_pretrain
    if kind is JobKind.FINETUNE:
        from workers.jobs.finetune import run_finetune

        return run_finetune
    if kind is JobKind.COMPRESS:
        from workers.jobs.compress import run_compress

        return run_compress
    raise JobKindNotImplementedError(
        f"job kind {kind.value} is not implemented in the training ranks yet; "
        f"{', '.join(kind.value for kind in JobKind)} run today"
    )


def _configure_logging(rank: int) -> None:
    # Rank 0 speaks for the gang; the others report only problems, so logs stay readable.
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Run one rank of the attempt described by the job file; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workers.jobs.run JOB_FILE", file=sys.stderr)
        return 2
    # First of all, so that a SIGTERM during start-up also ends in a checkpoint, not a kill.
    stop = StopRequest().install()
    job = JobFile.read(args[0])
    try:
        spec = parse_spec(job.spec)
        if job.allowed_roots is not None:  # checked again here, where the files are read
            check_spec_files(spec, AllowedRoots.from_dict(job.allowed_roots), spec.tenant)
    except SpecError as err:
        print(f"SpecError: {err}", file=sys.stderr, flush=True)
        return EXIT_SPEC_ERROR
    plan = Plan.from_dict(job.plan)
    run = runner_for(spec.kind)
    ctx = init_distributed()
    _configure_logging(ctx.rank)
    try:
        result = run(job, spec, plan, ctx, stop)
    except SpecError as err:
        # The data or model the spec names is wrong: every retry would fail the same way.
        print(f"SpecError: {err}", file=sys.stderr, flush=True)
        return EXIT_SPEC_ERROR
    finally:
        shutdown_distributed()
    return EXIT_PREEMPTED if result.outcome == "preempted" else 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``corral`` command line: submit, watch and manage jobs.

Commands only parse arguments, call the embedded service (or, later, the SDK) and render.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from api.cli.admin import admin
from api.cli.render import plan_table, pools_table, progress_line, queue_table, show_job, state_text
from api.cli.sim import sim
from api.embedded import open_embedded
from api.model_inputs import model_profile_for, submit_profile
from scheduler.db import repo
from scheduler.db.migrate import upgrade
from scheduler.db.session import Database, default_url
from scheduler.domain.errors import CorralError
from scheduler.domain.spec import JobSpec, load_spec_file
from scheduler.domain.state import JobState
from scheduler.policies.config import ORDERINGS, Ordering
from scheduler.service import SchedulerService

# Piped output (scripts, tests) is not cut to 80 columns: tables stay one row per job.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

FINAL_STATES = {JobState.SUCCEEDED.value, JobState.CANCELLED.value, JobState.FAILED.value}
"""A FAILED job with attempts left moves on to PENDING in the same transaction, so a job seen
FAILED has no retry left."""


class CorralGroup(click.Group):
    """Turns Corral's own errors into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CorralError as err:
            err_console.print(f"[red]error:[/] {err}", markup=True, highlight=False)
            sys.exit(2)


@click.group(cls=CorralGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="corral")
def cli() -> None:
    """Corral schedules LLM pretraining, finetuning and compression jobs.

    Embedded mode (the default) keeps a SQLite database under $CORRAL_HOME (~/.corral) and runs
    jobs on this machine's local pool. Start with:

      corral run examples/pretrain-tiny.yaml
    """


def _service() -> SchedulerService:
    return open_embedded()


def _finished(info: dict[str, Any]) -> bool:
    return info["state"] in FINAL_STATES


@cli.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--poll-s", default=1.0, show_default=True, help="Seconds between scheduler ticks.")
def run(job_file: Path, poll_s: float) -> None:
    """Submit JOB_FILE, schedule and run it here, and follow it to the end.

    Shows a progress bar with loss and tokens/s; Ctrl-C cancels the job cleanly (its ranks get
    SIGTERM and may checkpoint) and exits with status 130.
    """
    spec = load_spec_file(job_file)
    service = _service()
    job_id = service.submit(spec, submit_profile(service, spec))
    console.print(f"submitted job [bold]{job_id}[/] ({spec.name}, {spec.kind.value})")
    started = time.monotonic()
    seen_events = 0
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
                        TextColumn("loss {task.fields[loss]}"),
                        TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(),
                        console=console, transient=False)
    try:
        with progress:
            task = progress.add_task(spec.name, total=spec.total_steps(), loss="-", tps="-")
            while True:
                service.tick()
                info = service.describe(job_id)
                for event in info["events"][seen_events:]:
                    move = f"{state_text(event['to'])}: " if event["to"] else ""
                    progress.console.print(f"  {move}{escape(event['reason'])}", highlight=False)
                seen_events = len(info["events"])
                progress.update(task, completed=info["step"] or 0,
                                total=info["total_steps"] or spec.total_steps(),
                                loss="-" if info["loss"] is None else f"{info['loss']:.4f}",
                                tps="-" if info["tokens_per_s"] is None
                                else f"{info['tokens_per_s']:,.0f}")
                if _finished(info):
                    break
                time.sleep(poll_s)
    except KeyboardInterrupt:
        console.print("interrupted: cancelling the job (ranks get SIGTERM, then SIGKILL)")
        service.cancel(job_id, "cancelled by Ctrl-C")
        _summary(service, job_id, time.monotonic() - started)
        sys.exit(130)
    _summary(service, job_id, time.monotonic() - started)
    state = service.describe(job_id)["state"]
    sys.exit(0 if state == JobState.SUCCEEDED.value else 1)


def _summary(service: SchedulerService, job_id: int, wall_s: float) -> None:
    info = service.describe(job_id)
    console.rule(f"job {job_id} {info['state']}")
    console.print(f"wall time {wall_s:.1f} s, attempts {info['attempts']}, "
                  f"plan {info['plan'] or '-'}")
    if info["step"] is not None:
        console.print(progress_line(info))
    if info["checkpoints"]:
        console.print(f"latest checkpoint: {info['checkpoints'][-1]['path']}")
    console.print(f"run folder: {info['run_dir']}  (logs: corral logs {job_id})")


@cli.command()
@click.argument("job_files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", default=10, show_default=True, help="Feasible plans to show.")
@click.option("--rejected", "show_rejected", default=5, show_default=True,
              help="Rejected plans to show (closest to fitting first).")
def plan(job_files: tuple[Path, ...], limit: int, show_rejected: int) -> None:
    """Predict memory, step time, total time and price of every plan for each JOB_FILE on this
    cluster's pools, best first, without submitting anything.

    A job whose model.path is job:NAME is planned on NAME's export once NAME has run; before
    that, name NAME's file first (corral plan pretrain.yaml finetune.yaml) or submit NAME.
    """
    from scheduler.planning import plan_spec

    service = _service()
    earlier: dict[str, JobSpec] = {}
    unfit: list[str] = []
    for job_file in job_files:
        spec = load_spec_file(job_file)
        if len(job_files) > 1:
            console.print(f"[bold]{escape(str(job_file))}[/] ({spec.name}, {spec.kind.value})")
        report = plan_spec(service.db, spec, model_profile_for(service, spec, earlier))
        earlier[spec.name] = spec
        console.print(plan_table(report, limit, show_rejected))
        best = report.best
        if best is None:
            unfit.append(f"{spec.name} fits no pool: {report.smallest_fix()}")
            continue
        console.print(f"best: {best.pool}, {best.plan.describe()}; memory "
                      f"{best.memory_explain}; step {best.time_explain}", highlight=False)
    if unfit:
        raise CorralError("; ".join(unfit))


@cli.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
def submit(job_file: Path) -> None:
    """Validate JOB_FILE and queue it; prints the job id.

    In embedded mode a scheduler must be running to start it: `corral scheduler`.
    """
    spec = load_spec_file(job_file)
    service = _service()
    job_id = service.submit(spec, submit_profile(service, spec))
    console.print(job_id)


@cli.command()
@click.option("--once", is_flag=True, help="Run one tick and exit.")
@click.option("--poll-s", default=1.0, show_default=True, help="Seconds between ticks.")
@click.option("--ordering", type=click.Choice(ORDERINGS), default="fair_share",
              show_default=True, help="Which pending job goes first.")
@click.option("--preemption/--no-preemption", default=True, show_default=True,
              help="Stop lower-priority jobs (or borrowers) for a job that cannot fit.")
@click.option("--backfill/--no-backfill", default=True, show_default=True,
              help="Let short jobs run ahead of a blocked job when they cannot delay it.")
@click.option("--moldable/--no-moldable", default=True, show_default=True,
              help="Pick a device-range job's size by earliest predicted completion.")
def scheduler(once: bool, poll_s: float, ordering: Ordering, preemption: bool, backfill: bool,
              moldable: bool) -> None:
    """Run the embedded scheduler loop in the foreground (Ctrl-C stops it; jobs keep running)."""
    service = open_embedded(ordering=ordering, preemption=preemption, backfill=backfill,
                            moldable=moldable)
    try:
        while True:
            report = service.tick()
            for job_id in report.started:
                console.print(f"started job {job_id}")
            for job_id, state in report.ended.items():
                console.print(f"job {job_id} -> {state}")
            if once:
                return
            time.sleep(poll_s)
    except KeyboardInterrupt:
        console.print("scheduler stopped; running gangs continue and are picked up next start")


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@click.option("--limit", default=50, show_default=True)
def queue(show_all: bool, limit: int) -> None:
    """List jobs: state, plan, progress and why each pending job waits."""
    console.print(queue_table(_service().queue(include_finished=show_all, limit=limit)))


@cli.command()
@click.argument("job_id", type=int)
def show(job_id: int) -> None:
    """Show a job's spec, plan, progress, events, checkpoints and why it is pending."""
    show_job(console, _service().describe(job_id))


@cli.command()
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel a job; a running gang gets SIGTERM, a grace period, then SIGKILL."""
    state = _service().cancel(job_id)
    console.print(f"job {job_id}: {state}")


@cli.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--attempt", type=int, default=None, help="Which attempt (default: latest).")
def logs(job_id: int, follow: bool, attempt: int | None) -> None:
    """Print a job's log (all ranks, latest attempt)."""
    service = _service()
    path = service.log_path(job_id, attempt)
    if path is None or (not path.exists() and not follow):
        raise CorralError(f"job {job_id} has no log yet (state {service.job_state(job_id)})")
    offset = _print_new(path, 0)
    while follow:
        newest = service.log_path(job_id, attempt)
        finished = _finished(service.describe(job_id))
        offset = _print_new(path, offset)
        if newest is not None and newest != path:
            path, offset = newest, 0  # a retry started: follow its log
        elif finished:
            return
        time.sleep(0.5)


def _print_new(path: Path, offset: int) -> int:
    """Print what ``path`` gained since ``offset``; return the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    sys.stdout.write(chunk.decode(errors="replace"))
    sys.stdout.flush()
    return offset + len(chunk)


@cli.group(invoke_without_command=True)
@click.pass_context
def pools(ctx: click.Context) -> None:
    """List pools (devices free/total); `corral pools add` registers one."""
    if ctx.invoked_subcommand is None:
        console.print(pools_table(_service().pools()))


@pools.command("add")
@click.argument("name")
@click.option("--backend", required=True, type=click.Choice(["local", "ray", "kubernetes"]))
@click.option("--accelerator", required=True, help="e.g. H100-SXM, A100-80G, cpu")
@click.option("--nodes", type=click.IntRange(min=1), required=True)
@click.option("--devices-per-node", type=click.IntRange(min=1), required=True)
@click.option("--price", type=click.FloatRange(min=0), default=0.0,
              help="Price per device-hour (USD).")
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak TFLOP/s per device, overriding the accelerator catalog's (needed "
                   "for a CPU pool on other machines: the catalog has no CPU figure).")
def pools_add(name: str, backend: str, accelerator: str, nodes: int, devices_per_node: int,
              price: float, peak_tflops: float | None) -> None:
    """Register a pool of NODES like nodes."""
    service = _service()
    with service.db.write() as session:
        if repo.get_pool(session, name) is not None:
            raise CorralError(f"pool {name!r} exists already")
        repo.add_pool(session, name, backend, accelerator, nodes, devices_per_node, price,
                      peak_flops=peak_tflops * 1e12 if peak_tflops else None)
    console.print(f"added pool {name}: {nodes} × {devices_per_node} {accelerator}")


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.option("--url", default=None, help="Database URL (default: $CORRAL_DATABASE_URL or "
              "the SQLite file under $CORRAL_HOME).")
def db_upgrade(url: str | None) -> None:
    """Apply migrations up to the newest schema."""
    database = Database(url or default_url())
    revision = upgrade(database)
    console.print(f"database at revision {revision}")


cli.add_command(sim)


cli.add_command(admin)

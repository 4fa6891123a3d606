"""The ``corral`` command line: submit, watch and manage jobs, here or on a Corral server.

Commands only parse arguments, call the seam (:mod:`api.cli.seam`: the embedded service, or a
server through the SDK) and render; ``corral --server URL`` (or ``$CORRAL_SERVER``) chooses
the server.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from api.cli.admin import admin
from api.cli.follow import follow_run, print_summary, stream_log
from api.cli.login import login
from api.cli.render import (
    best_plan_line,
    plan_rows_json,
    plan_table,
    pools_table,
    queue_table,
    show_job,
)
from api.cli.seam import FINAL_STATES, CliContext
from api.cli.serve import policy_options, server
from scheduler.domain.errors import CorralError
from scheduler.domain.spec import JobSpec, load_spec_file, parse_spec
from scheduler.policies.config import Ordering

# Piped output (scripts, tests) is not cut to 80 columns: tables stay one row per job.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
LAZY_COMMANDS = {"sim": "api.cli.sim:sim"}
"""Commands whose modules load the simulator: imported only when named (or for --help)."""


def unreachable_database(err: Exception) -> str | None:
    """One line for a database that could not be reached (its URL without the password and
    the driver's reason); None for any other error."""
    # Not imported here: commands that never open a database need not load SQLAlchemy.
    session = sys.modules.get("scheduler.db.session")
    if session is None or not isinstance(err, session.DatabaseUnreachable):
        return None
    return f"cannot reach the database at {err.url}: {err.reason()}"


class CorralGroup(click.Group):
    """Turns Corral's own errors, and a database it cannot reach, into one clear line and exit
    status 2, and imports the commands with heavy dependencies (:data:`LAZY_COMMANDS`) only
    when they run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attribute = LAZY_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CorralError as err:
            err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False)
            if getattr(err, "code", None) == "unauthorized":
                err_console.print("  the token comes from $CORRAL_TOKEN or the file `corral "
                                  "login URL` writes", highlight=False)
            sys.exit(2)
        except Exception as err:
            line = unreachable_database(err)
            if line is None:
                raise
            err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            sys.exit(2)


def _ctx() -> CliContext:
    return click.get_current_context().find_object(CliContext) or CliContext()


@click.group(cls=CorralGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--server", "server_url", envvar="CORRAL_SERVER", metavar="URL", default=None,
              help="A Corral server to use instead of this machine ($CORRAL_SERVER); the "
                   "token comes from $CORRAL_TOKEN or `corral login URL`'s config file.")
@click.version_option(package_name="corral")
@click.pass_context
def cli(ctx: click.Context, server_url: str | None) -> None:
    """Corral schedules LLM pretraining, finetuning and compression jobs.

    Embedded mode (the default) keeps a SQLite database under $CORRAL_HOME (~/.corral) and runs
    jobs on this machine's local pool. Start with:

      corral run examples/pretrain-tiny.yaml

    With --server URL (or $CORRAL_SERVER) the same commands act on a Corral server; the token
    comes from $CORRAL_TOKEN or the config file `corral login URL` writes.
    """
    ctx.obj = CliContext(server_url)


@cli.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--poll-s", default=1.0, show_default=True, help="Seconds between polls.")
@click.option("--pool", default=None, help="Run on this pool (the spec's resources.pool).")
def run(job_file: Path, poll_s: float, pool: str | None) -> None:
    """Submit JOB_FILE, schedule and run it, and follow it to the end.

    Shows a progress bar with loss and tokens/s; Ctrl-C cancels the job cleanly (its ranks get
    SIGTERM and may checkpoint) and exits with status 130. Exit status 0 when it succeeded.
    """
    spec = load_spec_file(job_file)
    if pool is not None:  # checked as if the file said it
        raw = spec.model_dump(mode="json")
        spec = parse_spec({**raw, "resources": {**raw["resources"], "pool": pool}})
    corral = _ctx().corral()
    job_id = corral.submit(spec)
    console.print(f"submitted job [bold]{job_id}[/] ({spec.name}, {spec.kind.value})")
    started = time.monotonic()
    try:
        state = follow_run(console, corral, spec, job_id, poll_s)
    except KeyboardInterrupt:
        print_summary(console, corral, job_id, time.monotonic() - started)
        sys.exit(130)
    print_summary(console, corral, job_id, time.monotonic() - started)
    sys.exit(0 if state == "SUCCEEDED" else 1)


@cli.command()
@click.argument("job_files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", default=10, show_default=True, help="Feasible plans to show.")
@click.option("--rejected", "show_rejected", default=5, show_default=True,
              help="Rejected plans to show (closest to fitting first).")
@click.option("--json", "as_json", is_flag=True,
              help="Print every plan of every job as JSON (a list, one object per job file).")
def plan(job_files: tuple[Path, ...], limit: int, show_rejected: int, as_json: bool) -> None:
    """Predict memory, step time, total time and price of every plan for each JOB_FILE on this
    cluster's pools, best first, without submitting anything.

    A job whose model.path is job:NAME is planned on NAME's export once NAME has run; before
    that, name NAME's file first (corral plan pretrain.yaml finetune.yaml) or submit NAME.
    """
    corral = _ctx().corral()
    earlier: dict[str, JobSpec] = {}
    unfit: list[str] = []
    documents: list[dict[str, Any]] = []
    for job_file in job_files:
        spec = load_spec_file(job_file)
        report = corral.plan(spec, earlier)
        earlier[spec.name] = spec
        if report["best"] is None:
            unfit.append(f"{spec.name} fits no pool: {report['smallest_fix']}")
        if as_json:
            best = report["best"]
            documents.append({
                "job": spec.name, "file": str(job_file),
                "best": plan_rows_json({"feasible": [best], "rejected": []})[0] if best else None,
                "plans": plan_rows_json(report), "smallest_fix": report["smallest_fix"]})
            continue
        if len(job_files) > 1:
            console.print(f"[bold]{escape(str(job_file))}[/] ({spec.name}, {spec.kind.value})")
        console.print(plan_table(report, limit, show_rejected))
        if report["best"] is not None:
            console.print(best_plan_line(report["best"]), highlight=False, markup=False)
    if as_json:
        click.echo(json.dumps(documents, indent=2))
    if unfit:
        raise CorralError("; ".join(unfit))


@cli.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
def submit(job_file: Path) -> None:
    """Validate JOB_FILE and queue it; prints the job id.

    In embedded mode a scheduler must be running to start it: `corral scheduler`.
    """
    spec = load_spec_file(job_file)
    console.print(_ctx().corral().submit(spec))


@cli.command()
@click.option("--once", is_flag=True, help="Run one tick and exit.")
@click.option("--poll-s", default=1.0, show_default=True, help="Seconds between ticks.")
@policy_options
def scheduler(once: bool, poll_s: float, ordering: Ordering, preemption: bool, backfill: bool,
              moldable: bool) -> None:
    """Run the embedded scheduler loop in the foreground (Ctrl-C stops it; jobs keep running)."""
    _ctx().require_embedded("scheduler", "a server schedules on its own")
    from api.embedded import open_embedded

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
@click.option("--tenant", default=None, help="Only this tenant's jobs (admins).")
@click.option("--limit", default=50, show_default=True)
def queue(show_all: bool, tenant: str | None, limit: int) -> None:
    """List jobs: state, plan, progress and why each pending job waits."""
    console.print(queue_table(_ctx().corral().queue(show_all, limit, tenant)))


@cli.command()
@click.argument("job_id", type=int)
def show(job_id: int) -> None:
    """Show a job's spec, plan, progress, events, checkpoints and why it is pending."""
    show_job(console, _ctx().corral().describe(job_id))


@cli.command()
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel a job; a running gang gets SIGTERM, a grace period, then SIGKILL."""
    state = _ctx().corral().cancel(job_id)
    stopping = "" if state in FINAL_STATES else \
        " (cancel requested: the scheduler stops its gang)"
    console.print(f"job {job_id}: {state}{stopping}")


@cli.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--attempt", type=int, default=None, help="Which attempt (default: latest).")
def logs(job_id: int, follow: bool, attempt: int | None) -> None:
    """Print a job's log (all ranks, latest attempt)."""
    stream_log(_ctx().corral(), job_id, attempt, follow)


@cli.group(invoke_without_command=True)
@click.pass_context
def pools(ctx: click.Context) -> None:
    """List pools (devices free/total); `corral pools add` registers one."""
    if ctx.invoked_subcommand is None:
        console.print(pools_table(_ctx().corral().pools()))


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
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="The Ray cluster's address (its head's GCS port, or ray://HOST:PORT of "
                   "its client server): required with --backend ray.")
def pools_add(name: str, backend: str, accelerator: str, nodes: int, devices_per_node: int,
              price: float, peak_tflops: float | None, ray_address: str | None) -> None:
    """Register a pool of NODES like nodes."""
    settings = {"address": ray_address} if ray_address else None
    _ctx().corral().add_pool(name, backend, accelerator, nodes, devices_per_node, price,
                             peak_tflops, settings)
    console.print(f"added pool {name}: {nodes} × {devices_per_node} {accelerator}")


@pools.command("sync")
@click.option("--ray-address", required=True, metavar="HOST:PORT",
              help="The Ray cluster whose nodes make the pools.")
@click.option("--prefix", default="ray", show_default=True,
              help="Pools are named PREFIX-ACCELERATOR (ray-h100, ray-cpu).")
@click.option("--cpu-peak-tflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak TFLOP/s per device of a new CPU pool (the catalog has no CPU figure).")
def pools_sync(ray_address: str, prefix: str, cpu_peak_tflops: float | None) -> None:
    """Make a pool per accelerator type of a Ray cluster's nodes, or bring them up to date.

    Nodes with GPUs are grouped by Ray's accelerator type (their devices: the GPUs), nodes
    without by their CPUs; a node that left or died goes down. The leading scheduler repeats
    this every 30 s for the pools it made."""
    rows = _ctx().corral().sync_pools(ray_address, prefix, cpu_peak_tflops)
    for row in rows:
        console.print(f"{row['pool']:<16} {row['node']:<20} {row['devices']:>4} devices  "
                      f"{row['state']:<9} {row['change']}")
    if not rows:
        console.print("the cluster reports no node with devices")


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.option("--url", default=None, help="Database URL (default: $CORRAL_DATABASE_URL or "
              "the SQLite file under $CORRAL_HOME).")
def db_upgrade(url: str | None) -> None:
    """Apply migrations up to the newest schema."""
    from scheduler.db.migrate import upgrade
    from scheduler.db.session import Database, default_url

    database = Database(url or default_url())
    revision = upgrade(database)
    console.print(f"database at revision {revision}")


for command in (admin, login, server):
    cli.add_command(command)

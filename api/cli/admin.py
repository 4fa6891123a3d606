"""``corral admin``: tenants (cohort, weight, limits), quotas, API tokens and the cost model's
calibration table.

Without ``--server`` the commands write the database directly ($CORRAL_DATABASE_URL or the
SQLite file under $CORRAL_HOME): that is how a new server's first admin token is made. With
``--server`` they go through the REST API and need an admin token.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from api.cli.render import rows_table
from api.cli.seam import Admin, CliContext
from scheduler.domain.plan import Strategy
from scheduler.domain.spec import JobKind

console = Console(width=None if sys.stdout.isatty() else 200)


def _admin() -> Admin:
    return (click.get_current_context().find_object(CliContext) or CliContext()).admin()


@click.group()
def admin() -> None:
    """Tenants, quotas and tokens (who may use how many devices of which accelerator); the
    cost model's calibration."""


@admin.group(invoke_without_command=True)
@click.pass_context
def tenant(ctx: click.Context) -> None:
    """List tenants; `corral admin tenant set` creates or changes one."""
    if ctx.invoked_subcommand is None:
        console.print(rows_table("Tenants", _admin().tenants()))


@tenant.command("set")
@click.argument("name")
@click.option("--cohort", default=None, help="Cohort whose members lend each other idle quota.")
@click.option("--no-cohort", is_flag=True, help="Leave its cohort.")
@click.option("--weight", type=float, default=None,
              help="Fair-share weight (default 1; 2 = entitled to twice the share).")
@click.option("--max-pending-jobs", type=click.IntRange(min=0), default=None,
              help="Most jobs it may have PENDING at once (server default otherwise).")
@click.option("--submissions-per-minute", type=click.IntRange(min=0), default=None,
              help="Most submissions in any 60 s (server default otherwise).")
@click.option("--max-priority", type=click.IntRange(-1000, 1000), default=None,
              help="Highest resources.priority its members may ask for.")
@click.option("--job-user", default=None, help="Whom its ranks run as in server mode: a user "
              "name, UID or UID:GID (server's CORRAL_JOB_USER otherwise).")
@click.option("--data-root", "data_roots", multiple=True, metavar="FOLDER",
              help="A folder its data.path may lie in (repeat; replaces the list).")
@click.option("--model-root", "model_roots", multiple=True, metavar="FOLDER",
              help="A folder its model.path and tokenizer.path may lie in (repeat; replaces "
                   "the list).")
@click.option("--server-defaults", "clear", multiple=True,
              type=click.Choice(["job_user", "data_roots", "model_roots"]),
              help="Forget its own setting of this field: the server's applies (repeat).")
def tenant_set(name: str, cohort: str | None, no_cohort: bool, weight: float | None,
               max_pending_jobs: int | None, submissions_per_minute: int | None,
               max_priority: int | None, job_user: str | None, data_roots: tuple[str, ...],
               model_roots: tuple[str, ...], clear: tuple[str, ...]) -> None:
    """Create or change tenant NAME: options left out stay as they are."""
    row = _admin().set_tenant(name, cohort=cohort, weight=weight, clear_cohort=no_cohort,
                              max_pending_jobs=max_pending_jobs,
                              submissions_per_minute=submissions_per_minute,
                              max_priority=max_priority, job_user=job_user,
                              data_roots=list(data_roots) or None,
                              model_roots=list(model_roots) or None, clear=clear)
    console.print(f"tenant {row['name']}: cohort {row['cohort'] or '-'}, weight {row['weight']}, "
                  f"max pending jobs {_default(row.get('max_pending_jobs'))}, submissions per "
                  f"minute {_default(row.get('submissions_per_minute'))}, max priority "
                  f"{_default(row.get('max_priority'))}, job user "
                  f"{_default(row.get('job_user'))}, data roots "
                  f"{_default(row.get('data_roots'))}, model roots "
                  f"{_default(row.get('model_roots'))}", highlight=False)


@admin.group(invoke_without_command=True)
@click.pass_context
def quota(ctx: click.Context) -> None:
    """List quotas; `corral admin quota set` / `delete` change them."""
    if ctx.invoked_subcommand is None:
        console.print(rows_table("Quotas", _admin().quotas()))


@quota.command("set")
@click.argument("tenant_name", metavar="TENANT", required=False)
@click.option("--cohort", default=None, help="Set the devices a cohort owns instead.")
@click.option("--accelerator", required=True, help="e.g. H100-SXM, cpu")
@click.option("--nominal", type=click.IntRange(min=0), required=True,
              help="Devices guaranteed to the tenant (or owned by the cohort).")
@click.option("--borrowing-limit", type=click.IntRange(min=0), default=None,
              help="At most this many devices above nominal, borrowed in the cohort.")
@click.option("--lending-limit", type=click.IntRange(min=0), default=None,
              help="At most this many of its nominal devices lent to the cohort.")
def quota_set(tenant_name: str | None, cohort: str | None, accelerator: str, nominal: int,
              borrowing_limit: int | None, lending_limit: int | None) -> None:
    row = _admin().set_quota(accelerator, nominal, tenant_name, cohort, borrowing_limit,
                             lending_limit)
    who = row["tenant"] or f"cohort {row['cohort']}"
    console.print(f"quota {who}: {row['nominal']} {row['accelerator']} (borrowing limit "
                  f"{_limit(row['borrowing_limit'])}, lending limit "
                  f"{_limit(row['lending_limit'])})")


@quota.command("delete")
@click.argument("tenant_name", metavar="TENANT", required=False)
@click.option("--cohort", default=None)
@click.option("--accelerator", required=True)
def quota_delete(tenant_name: str | None, cohort: str | None, accelerator: str) -> None:
    _admin().delete_quota(accelerator, tenant_name, cohort)
    console.print(f"deleted the {accelerator} quota of {tenant_name or 'cohort ' + str(cohort)}")


@admin.group()
def token() -> None:
    """API tokens: `issue`, `list`, `revoke`."""


@token.command("issue")
@click.option("--tenant", "tenant_name", required=True, help="The tenant the token acts for.")
@click.option("--role", type=click.Choice(["member", "admin"]), required=True,
              help="member: its tenant's jobs only; admin: everything.")
@click.option("--name", default="", help="What the token is for (shown in listings).")
def token_issue(tenant_name: str, role: str, name: str) -> None:
    """Issue a token; it is printed once and cannot be shown again."""
    row = _admin().issue_token(tenant_name, role, name)
    console.print(f"token {row['id']} for tenant {row['tenant']} ({row['role']}):",
                  highlight=False)
    click.echo(row["token"])
    console.print("This is the only time the token is shown; it cannot be shown again. Keep "
                  "it in a secret store, in $CORRAL_TOKEN, or run `corral login URL`.",
                  highlight=False)


@token.command("list")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's tokens.")
def token_list(tenant_name: str | None) -> None:
    """List tokens (their first characters, never the whole token)."""
    console.print(rows_table("Tokens", _admin().tokens(tenant_name)))


@token.command("revoke")
@click.argument("token_id", type=int)
def token_revoke(token_id: int) -> None:
    """Revoke a token: the next request that carries it is refused."""
    row = _admin().revoke_token(token_id)
    console.print(f"token {token_id} ({row.get('prefix', '?')}…, tenant "
                  f"{row.get('tenant', '?')}) revoked", highlight=False)


@admin.group(invoke_without_command=True)
@click.pass_context
def calibration(ctx: click.Context) -> None:
    """List the measured efficiencies η; `corral admin calibration reset` deletes them."""
    if ctx.invoked_subcommand is None:
        rows = [{**row, "efficiency": _eta(row["efficiency"]),
                 "prior_efficiency": _eta(row["prior_efficiency"])}
                for row in _admin().calibration()]
        console.print(rows_table("Calibration (η per accelerator, strategy, job kind)", rows))


@calibration.command("reset")
@click.option("--accelerator", default=None, help="Only this accelerator's rows (e.g. H100-SXM).")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]), default=None,
              help="Only this strategy's rows.")
@click.option("--kind", type=click.Choice([k.value for k in JobKind]), default=None,
              help="Only this job kind's rows.")
def calibration_reset(accelerator: str | None, strategy: str | None, kind: str | None) -> None:
    """Delete the rows matching every option given (every row without one): plans there use
    the prior η until jobs measure it again."""
    row = _admin().reset_calibration(accelerator, strategy, kind)
    console.print(f"deleted {row['deleted']} calibration row(s); plans there use the prior η",
                  highlight=False)


def _eta(value: float | None) -> str | None:
    return None if value is None else f"{value:.3g}"


def _limit(value: int | None) -> str:
    return "none" if value is None else str(value)


def _default(value: Any) -> str:
    return "server default" if value is None else str(value)

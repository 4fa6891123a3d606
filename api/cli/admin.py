"""``corral admin``: tenants (cohort, fair-share weight) and quotas, in the database."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from api.embedded import open_embedded
from scheduler import admin as settings

console = Console()


@click.group()
def admin() -> None:
    """Tenants and quotas (who may use how many devices of which accelerator)."""


@admin.group(invoke_without_command=True)
@click.pass_context
def tenant(ctx: click.Context) -> None:
    """List tenants; `corral admin tenant set` creates or changes one."""
    if ctx.invoked_subcommand is None:
        _print("Tenants", settings.list_tenants(open_embedded().db))


@tenant.command("set")
@click.argument("name")
@click.option("--cohort", default=None, help="Cohort whose members lend each other idle quota.")
@click.option("--no-cohort", is_flag=True, help="Leave its cohort.")
@click.option("--weight", type=float, default=None,
              help="Fair-share weight (default 1; 2 = entitled to twice the share).")
def tenant_set(name: str, cohort: str | None, no_cohort: bool, weight: float | None) -> None:
    row = settings.set_tenant(open_embedded().db, name, cohort, weight, clear_cohort=no_cohort)
    console.print(f"tenant {row['name']}: cohort {row['cohort'] or '-'}, weight {row['weight']}")


@admin.group(invoke_without_command=True)
@click.pass_context
def quota(ctx: click.Context) -> None:
    """List quotas; `corral admin quota set` / `delete` change them."""
    if ctx.invoked_subcommand is None:
        _print("Quotas", settings.list_quotas(open_embedded().db))


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
    row = settings.set_quota(open_embedded().db, accelerator, nominal, tenant_name, cohort,
                             borrowing_limit, lending_limit)
    who = row["tenant"] or f"cohort {row['cohort']}"
    console.print(f"quota {who}: {row['nominal']} {row['accelerator']} (borrowing limit "
                  f"{_limit(row['borrowing_limit'])}, lending limit "
                  f"{_limit(row['lending_limit'])})")


@quota.command("delete")
@click.argument("tenant_name", metavar="TENANT", required=False)
@click.option("--cohort", default=None)
@click.option("--accelerator", required=True)
def quota_delete(tenant_name: str | None, cohort: str | None, accelerator: str) -> None:
    settings.delete_quota(open_embedded().db, accelerator, tenant_name, cohort)
    console.print(f"deleted the {accelerator} quota of {tenant_name or 'cohort ' + str(cohort)}")


def _limit(value: int | None) -> str:
    return "none" if value is None else str(value)


def _print(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title, title_justify="left")
    if not rows:
        console.print(f"{title}: none")
        return
    for header in rows[0]:
        table.add_column(header.upper().replace("_", " "))
    for row in rows:
        table.add_row(*("-" if value is None else str(value) for value in row.values()))
    console.print(table)

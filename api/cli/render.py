"""Tables and summaries for the terminal; no decisions here."""

from __future__ import annotations

from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATE_STYLE = {
    "PENDING": "yellow", "ADMITTED": "cyan", "RUNNING": "blue", "SUCCEEDED": "green",
    "FAILED": "red", "CANCELLED": "magenta", "PREEMPTED": "yellow",
}


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def duration(seconds: float | None) -> str:
    """A duration a person reads at a glance: ``850 µs``, ``131 ms``, ``1.31 s``, ``12.5 min``,
    ``3.40 h``, ``12.3 d``."""
    if seconds is None:
        return "-"
    for limit, unit, scale in ((1e-3, "µs", 1e-6), (1.0, "ms", 1e-3), (120.0, "s", 1.0),
                               (7200.0, "min", 60.0), (172800.0, "h", 3600.0)):
        if seconds < limit:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 86400:,.1f} d"


def plan_rows_json(report: dict[str, Any]) -> list[dict[str, Any]]:
    """``corral plan --json``'s rows: every candidate, feasible ones first (best first), then
    the rejected ones closest to fitting first (README, "corral plan --json")."""
    rows = []
    for feasible, candidates in ((True, report["feasible"]),
                                 (False, sorted(report["rejected"], key=_memory_ratio))):
        for c in candidates:
            rows.append({
                "pool": c["pool"], "accelerator": c["accelerator"], "devices": c["devices"],
                "strategy": c["plan_detail"]["strategy"], "plan": c["plan"],
                "plan_detail": c["plan_detail"], "memory_bytes": c["memory_bytes"],
                "memory_limit_bytes": c["memory_limit_bytes"], "step_time_s": c["step_time_s"],
                "total_time_s": c["run_time_s"], "completion_s": c["completion_s"],
                "price": c["price_usd"], "feasible": feasible, "reason": c["why_not"] or None,
            })
    return rows


def state_text(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def progress_line(info: dict[str, Any]) -> str:
    """``step 400/400, train loss 6.87 (step 1) -> 0.39, eval loss 0.38, 16,855 tokens/s``."""
    return (f"step {info['step']}/{info['total_steps']}, train loss "
            f"{_num(info['first_loss'], '.4f')} (step 1) -> {_num(info['loss'], '.4f')}, "
            f"eval loss {_num(info['eval_loss'], '.4f')}, "
            f"{_num(info['tokens_per_s'], ',.0f')} tokens/s")


def queue_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Jobs", title_justify="left")
    for header in ("ID", "NAME", "TENANT", "KIND", "STATE", "PRIO", "POOL", "PLAN", "STEP",
                   "LOSS", "TOK/S", "WHY PENDING"):
        table.add_column(header, overflow="fold")
    for row in rows:
        step = "-" if row["step"] is None else f"{row['step']}/{row['total_steps'] or '?'}"
        table.add_row(str(row["id"]), row["name"], row.get("tenant") or "-", row["kind"],
                      state_text(row["state"]),
                      str(row["priority"]), row["pool"] or "-", row["plan"] or "-", step,
                      _num(row["loss"], ".4f"), _num(row["tokens_per_s"], ",.0f"),
                      escape(row["pending_reason"] or ""))
    return table


def pools_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Pools", title_justify="left")
    for header in ("NAME", "BACKEND", "ACCELERATOR", "NODES", "DEVICES/NODE", "FREE/TOTAL",
                   "$/DEVICE-HOUR", "PEAK TFLOP/S"):
        table.add_column(header)
    for row in rows:
        peak, source = row["peak_flops"]  # a pair here, a two-item list over JSON
        where = (row.get("backend_settings") or {}).get("address")
        backend = f"{row['backend']} {where}" if where else row["backend"]
        price, price_source = row["planned_price"]
        table.add_row(row["name"], backend, row["accelerator"], str(row["nodes"]),
                      str(row["devices_per_node"]), f"{row['free']}/{row['devices']}",
                      "-" if price is None else f"{price:.2f} ({price_source})",
                      "-" if peak is None else f"{peak / 1e12:.3g} ({source})")
    return table


def show_job(console: Console, info: dict[str, Any]) -> None:
    console.print(f"[bold]Job {info['id']}[/] {escape(info['name'])} ({info['kind']}) "
                  f"{state_text(info['state'])}")
    if info["state"] == "PENDING":
        why = escape(info["pending_reason"] or "not yet considered")
        console.print(f"[bold]Why pending:[/] {why}")
    console.print(f"Attempts: {info['attempts']} (max failures {info['max_attempts']})   "
                  f"Pool: {info['pool'] or '-'}   Run folder: {info['run_dir'] or '-'}")
    if info["step"] is not None:
        console.print(f"Progress: {progress_line(info)}")
    if info["plan"]:
        console.print(f"[bold]Plan:[/] {info['plan']}")
    predicted, measured = info.get("predicted_step_time_s"), info.get("measured_step_time_s")
    if predicted is not None:
        truth = f", measured {measured * 1e3:.4g} ms" if measured is not None else ""
        console.print(f"Step time: predicted {predicted * 1e3:.4g} ms{truth}; run time "
                      f"predicted {info['predicted_run_time_s'] / 3600:.3g} h")
    if info.get("deadline_at"):
        console.print(f"Deadline: {info['deadline_at'][:19].replace('T', ' ')} UTC")
    if info["devices"]:
        held = ", ".join(f"{node}:{devs}" for node, devs in info["devices"].items())
        console.print(f"Devices held: {held}")
    console.print("[bold]Spec:[/]")
    console.print(yaml.safe_dump(info["spec"], sort_keys=False).rstrip(), markup=False,
                  highlight=False)
    events = Table(title="Events", title_justify="left")
    for header in ("TIME", "MOVE", "REASON"):
        events.add_column(header, overflow="fold")
    for event in info["events"]:
        move = f"{event['from'] or ''} → {event['to']}" if event["to"] else ""
        events.add_row(event["time"][:19].replace("T", " "), move, escape(event["reason"]))
    console.print(events)
    if info["checkpoints"]:
        ckpts = ", ".join(f"step {c['step']}{'' if c['exists'] else ' (deleted)'}"
                          for c in info["checkpoints"])
        console.print(f"Checkpoints: {ckpts}")


def plan_table(report: dict[str, Any], limit: int, show_rejected: int) -> Table:
    """Ranked candidates first, then the rejected ones closest to fitting, with why not.

    ``report`` is what ``POST /v1/plan`` answers (embedded mode builds the same dict)."""
    gib = 2**30
    table = Table(title="Candidate plans (best first)", title_justify="left")
    for header in ("#", "POOL", "DEVICES", "PLAN", "MEM/DEVICE", "STEP", "TOTAL", "PRICE",
                   "WHY NOT"):
        table.add_column(header, overflow="fold")
    rejected = sorted(report["rejected"], key=_memory_ratio)
    rows = [(str(i + 1), c) for i, c in enumerate(report["feasible"][:limit])]
    rows += [("-", c) for c in rejected[:show_rejected]]
    for rank, c in rows:
        table.add_row(rank, c["pool"], str(c["devices"]), c["plan"],
                      f"{_num(_scaled(c['memory_bytes'], gib), '.2f')}/"
                      f"{_num(_scaled(c['memory_limit_bytes'], gib), '.0f')} GiB",
                      duration(c["step_time_s"]), duration(c["run_time_s"]),
                      f"${_num(c['price_usd'], ',.2f')}", escape(c["why_not"] or ""))
    return table


def _scaled(value: float | None, unit: float) -> float | None:
    return None if value is None else value / unit


def _memory_ratio(row: dict[str, Any]) -> float:
    """Closest to fitting first; a row without a memory prediction last."""
    used, limit = row.get("memory_bytes"), row.get("memory_limit_bytes")
    return used / limit if used is not None and limit else float("inf")


def best_plan_line(best: dict[str, Any]) -> str:
    """``best: local, ddp world=2 ...; memory ...; step ...``."""
    return (f"best: {best['pool']}, {best['plan']}; memory {best.get('memory_explain') or '-'}; "
            f"step {best.get('step_time_explain') or '-'}")


def rows_table(title: str, rows: list[dict[str, Any]]) -> Table | str:
    """Any list of flat rows (tenants, quotas, tokens) as a table, headers from the keys."""
    if not rows:
        return f"{title}: none"
    table = Table(title=title, title_justify="left")
    for header in rows[0]:
        table.add_column(header.upper().replace("_", " "))
    for row in rows:
        table.add_row(*("-" if value is None else escape(str(value)) for value in row.values()))
    return table

"""The `corral` command line as a user types it: real processes, a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scheduler.db.migrate import head_revision
from tests.builders import spec_dict

CORRAL = [sys.executable, "-m", "api.cli"]


@pytest.fixture
def corral(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run ``corral ARGS`` with its own CORRAL_HOME; returns the finished process."""
    env = dict(os.environ, CORRAL_HOME=str(tmp_path / "home"), CORRAL_LOCAL_DEVICES="2")
    env.pop("CORRAL_DATABASE_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CORRAL, *args], env=env, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    return run


def _job(tmp_path: Path, text: str | None = None, **overrides: object) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(spec_dict(**overrides)))
    return str(path)


def test_help_lists_every_command(corral) -> None:  # type: ignore[no-untyped-def]
    out = corral("--help").stdout
    for command in ("run", "submit", "queue", "show", "cancel", "logs", "pools", "db",
                    "scheduler"):
        assert f"  {command}" in out


BAD_JOBS = [
    ("malformed", "name: x\nkind: pretrain\n  bad: indent\n", {}, "malformed YAML at line 3"),
    ("unknown field", None, {"epochs": 3}, "epochs: unknown field"),
    ("zero devices", None, {"resources__devices": 0}, "resources.devices"),
    ("too many devices", None, {"resources__devices": 64},
     "asks for 64 devices, but the largest matching pool 'local' can run a gang of at most 2"),
    ("unknown pool", None, {"resources__pool": "a100"}, "unknown pool 'a100'; known pools: local"),
    ("unknown accelerator", None, {"resources__accelerator": "H100"},
     "no pool has accelerator 'H100'"),
    ("missing data file", None, {"data__source": "file", "data__path": "corpus.txt"},
     "corpus.txt does not exist"),
]


@pytest.mark.parametrize(("case", "text", "overrides", "message"), BAD_JOBS,
                         ids=[case for case, *_ in BAD_JOBS])
def test_bad_jobs_are_refused_with_a_clear_error_and_nothing_is_stored(
        corral, tmp_path: Path, case: str, text: str | None,  # type: ignore[no-untyped-def]
        overrides: dict[str, object], message: str) -> None:
    done = corral("submit", _job(tmp_path, text, **overrides))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr.replace("\n", " ")
    assert "Traceback" not in done.stderr
    assert "tiny" not in corral("queue", "--all").stdout  # no job row


def test_submit_queue_show_cancel(corral, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = corral("submit", _job(tmp_path, resources__devices=2))
    assert first.returncode == 0 and first.stdout.strip() == "1"
    queue = corral("queue").stdout
    assert "PENDING" in queue and "tiny" in queue
    shown = corral("show", "1").stdout
    assert "Why pending: not yet considered" in shown and "→ PENDING" in shown
    assert "global_batch: 4" in shown
    assert "job 1: CANCELLED" in corral("cancel", "1").stdout
    assert "CANCELLED" in corral("queue", "--all").stdout
    assert "tiny" not in corral("queue").stdout  # finished jobs only with --all


def test_unknown_job_and_missing_log(corral, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = corral("show", "42")
    assert missing.returncode == 2 and "no job with id 42" in missing.stderr
    corral("submit", _job(tmp_path))
    logs = corral("logs", "1")
    assert logs.returncode == 2 and "job 1 has no log yet (state PENDING)" in logs.stderr


def test_pools_list_and_add(corral) -> None:  # type: ignore[no-untyped-def]
    listed = corral("pools").stdout
    assert "local" in listed and "2/2" in listed
    unreachable = corral("pools", "add", "h100", "--backend", "ray", "--accelerator",
                         "H100-SXM", "--nodes", "2", "--devices-per-node", "8")
    assert unreachable.returncode == 2
    assert "a ray pool needs address (corral pools add ... --ray-address" in unreachable.stderr
    added = corral("pools", "add", "h100", "--backend", "ray", "--accelerator", "H100-SXM",
                   "--nodes", "2", "--devices-per-node", "8", "--price", "3.5",
                   "--ray-address", "10.0.0.5:6379")
    assert added.returncode == 0, added.stderr
    listed = corral("pools").stdout
    assert "16/16" in listed
    assert "989 (catalog)" in listed  # H100-SXM's dense bf16 peak from the catalog
    assert "3.50 (pool)" in listed  # the price the planner charges, the pool's own
    assert "(pool)" in listed  # the local CPU pool's measured peak
    custom = corral("pools", "add", "cpus", "--backend", "ray", "--accelerator", "cpu",
                    "--nodes", "4", "--devices-per-node", "16", "--peak-tflops", "0.25",
                    "--ray-address", "ray://head.lab:10001")
    assert custom.returncode == 0, custom.stderr
    listed = corral("pools").stdout
    assert "0.25 (pool)" in listed
    assert "0.00 (catalog)" in listed  # no price given: the catalog's for a CPU
    again = corral("pools", "add", "h100", "--backend", "ray", "--accelerator", "H100-SXM",
                   "--nodes", "1", "--devices-per-node", "8", "--ray-address", "10.0.0.5:6379")
    assert again.returncode == 2 and "pool 'h100' exists already" in again.stderr
    # A pool no backend here can serve was accepted, and its jobs waited forever.
    nowhere = corral("pools", "add", "k8s", "--backend", "kubernetes", "--accelerator",
                     "H100-SXM", "--nodes", "1", "--devices-per-node", "8")
    assert nowhere.returncode == 2
    assert "no backend 'kubernetes' here; pick one of local, ray" in nowhere.stderr
    assert "k8s" not in corral("pools").stdout


def test_db_upgrade_is_idempotent(corral, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'other.db'}"
    for _ in range(2):
        done = corral("db", "upgrade", "--url", url)
        assert done.returncode == 0 and f"database at revision {head_revision()}" in done.stdout


def test_plan_prints_ranked_candidates_and_refuses_what_fits_nowhere(
        corral, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    example = Path(__file__).resolve().parents[2] / "examples" / "pretrain-tiny.yaml"
    planned = corral("plan", str(example))
    assert planned.returncode == 0, planned.stderr
    assert "Candidate plans" in planned.stdout and "best: local, ddp world=2" in planned.stdout
    huge = _job(tmp_path, model__config={"hidden_size": 8192, "num_hidden_layers": 80,
                                         "num_attention_heads": 64, "intermediate_size": 28672},
                data__seq_len=4096, resources__devices=1)
    refused = corral("plan", huge)
    assert refused.returncode == 2 and "fits no pool: needs" in refused.stderr


def test_plan_json_lists_every_plan_with_the_documented_fields(
        corral, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    example = Path(__file__).resolve().parents[2] / "examples" / "pretrain-tiny.yaml"
    planned = corral("plan", "--json", str(example))
    assert planned.returncode == 0, planned.stderr
    (document,) = json.loads(planned.stdout)
    assert document["job"] == "pretrain-tiny" and document["smallest_fix"] is None
    fields = {"pool", "devices", "strategy", "memory_bytes", "step_time_s", "total_time_s",
              "price", "feasible", "reason"}
    plans = document["plans"]
    assert plans and all(fields <= set(row) for row in plans)
    assert document["best"] == plans[0] and plans[0]["feasible"] is True
    assert all(row["step_time_s"] > 0 and row["memory_bytes"] > 0 for row in plans)
    # Feasible plans first, then the rejected ones, each with its reason.
    feasible = [row["feasible"] for row in plans]
    assert feasible == sorted(feasible, reverse=True)
    assert all(row["reason"] for row in plans if not row["feasible"])
    huge = _job(tmp_path, model__config={"hidden_size": 8192, "num_hidden_layers": 80,
                                         "num_attention_heads": 64, "intermediate_size": 28672},
                data__seq_len=4096, resources__devices=1)
    refused = corral("plan", "--json", huge)
    assert refused.returncode == 2 and "fits no pool" in refused.stderr
    (unfit,) = json.loads(refused.stdout)
    assert unfit["best"] is None and "needs" in unfit["smallest_fix"]


def test_plan_keeps_torch_and_transformers_off_its_path(tmp_path: Path) -> None:
    """`corral plan` took 13-39 s, ~24 s of it importing transformers and torch to fill in an
    inline model config; the planner's own defaults table needs neither."""
    example = Path(__file__).resolve().parents[2] / "examples" / "pretrain-tiny.yaml"
    program = ("import sys\n"
               "from api.cli.main import cli\n"
               f"cli.main(['plan', {str(example)!r}], standalone_mode=False)\n"
               "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
               "print('IMPORTED', heavy)\n")
    env = dict(os.environ, CORRAL_HOME=str(tmp_path / "home"), CORRAL_LOCAL_DEVICES="2")
    env.pop("CORRAL_DATABASE_URL", None)
    # The first command on a new home measures the local CPU's matmul peak (with torch), once.
    setup = subprocess.run([*CORRAL, "pools"], env=env, capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert setup.returncode == 0, setup.stderr
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "best: local" in done.stdout
    assert "IMPORTED []" in done.stdout


def test_plan_works_on_every_example(corral) -> None:  # type: ignore[no-untyped-def]
    """One `corral plan` over every example: the pretraining job first, so that the jobs
    starting from its export (model.path: job:pretrain-tiny) are planned on its config."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    first = examples / "pretrain-tiny.yaml"
    files = [first, *sorted(p for p in examples.glob("*.yaml") if p != first)]
    planned = corral("plan", *map(str, files))
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.count("\nbest: ") == len(files), planned.stdout
    # LoRA trains replicated only; distillation holds the teacher beside the student
    lora = planned.stdout.split("finetune-lora.yaml")[1].split("best: ")[1]
    assert lora.startswith("local, ddp") or lora.startswith("local, single")
    distill = planned.stdout.split("distill.yaml")[1].split("best: ")[1]
    assert "(teacher)" in " ".join(distill.splitlines()[:3])


def test_plan_names_the_missing_job_of_a_job_reference(corral) -> None:  # type: ignore[no-untyped-def]
    examples = Path(__file__).resolve().parents[2] / "examples"
    refused = corral("plan", str(examples / "finetune-lora.yaml"))
    assert refused.returncode == 2
    assert "no job named 'pretrain-tiny' has run or is queued" in refused.stderr
    assert "corral plan pretrain-tiny.yaml THIS.yaml" in refused.stderr


def test_admin_sets_tenants_and_quotas_and_refuses_bad_ones(corral) -> None:  # type: ignore[no-untyped-def]
    assert corral("admin", "tenant", "set", "team-a", "--cohort", "lab",
                  "--weight", "2").returncode == 0
    done = corral("admin", "quota", "set", "team-a", "--accelerator", "cpu", "--nominal", "1",
                  "--borrowing-limit", "1")
    assert done.returncode == 0, done.stderr
    listed = corral("admin", "quota").stdout
    assert "team-a" in listed and "lab" in listed
    bad = corral("admin", "quota", "set", "team-a", "--accelerator", "cpu", "--nominal", "1",
                 "--lending-limit", "3")
    assert bad.returncode == 2
    assert "lending_limit_devices 3 must be between 0 and nominal_devices 1" in bad.stderr
    assert "│ 1 " in corral("admin", "quota").stdout  # the refused change wrote nothing
    assert "│ 3 " not in corral("admin", "quota").stdout
    both = corral("admin", "quota", "set", "team-a", "--cohort", "lab", "--accelerator", "cpu",
                  "--nominal", "1")
    assert both.returncode == 2 and "exactly one of a tenant or --cohort" in both.stderr

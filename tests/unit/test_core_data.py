"""The data pipeline: generated corpus, tokenizers, packing, split and the step sampler."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from scheduler.domain.errors import SpecError
from scheduler.domain.spec import DataSpec, TokenizerSpec
from workers.core.corpus import generated_corpus, generated_story, load_documents
from workers.core.data import (
    BatchLayout,
    StepSampler,
    eval_micro_batches,
    split_windows,
    token_stream,
)
from workers.core.tokenizer import (
    TOKENIZER_FILE,
    BpeTokenizer,
    ByteTokenizer,
    PretrainedTokenizer,
    build_tokenizer,
    train_bpe,
)

SAMPLE_TEXTS = ["Once upon a time, a fox named Zoë found a key.", "Ünïcödé and emoji 🦊 too."]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bpe") / "tokenizer"
    train_bpe(generated_corpus(seed=0, documents=200), vocab_size=400, directory=directory)
    return directory


# --- generated corpus --------------------------------------------------------------------------


def test_generated_corpus_is_the_same_on_every_call() -> None:
    assert generated_corpus(seed=3, documents=20) == generated_corpus(seed=3, documents=20)


def test_story_i_does_not_depend_on_how_many_stories_are_generated() -> None:
    assert generated_corpus(seed=3, documents=50)[:10] == generated_corpus(seed=3, documents=10)


def test_seeds_give_different_corpora_and_stories_differ_from_each_other() -> None:
    corpus = generated_corpus(seed=0, documents=100)
    assert corpus != generated_corpus(seed=1, documents=100)
    assert len(set(corpus)) > 90


@pytest.mark.parametrize("index", range(5))
def test_a_story_keeps_its_hero_from_start_to_end(index: int) -> None:
    story = generated_story(seed=0, index=index)
    match = re.search(r"(?:named|called) (\w+)", story)
    assert match is not None
    assert story.count(match.group(1)) >= 5


def test_text_files_split_into_paragraphs_and_jsonl_reads_the_text_field(tmp_path: Path) -> None:
    txt = tmp_path / "corpus.txt"
    txt.write_text("first paragraph\nstill first\n\n\nsecond\n")
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")

    assert load_documents(DataSpec(path=str(txt)), seed=0) == [
        "first paragraph\nstill first", "second"]
    assert load_documents(DataSpec(path=str(jsonl), text_field="body"), seed=0) == ["one", "two"]


def test_jsonl_without_the_text_field_names_the_line_and_the_fix(tmp_path: Path) -> None:
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(SpecError, match=r"corpus.jsonl:2: no string field 'text'.*text_field"):
        load_documents(DataSpec(path=str(jsonl)), seed=0)


# --- tokenizers --------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_any_text_and_reserves_specials() -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode_batch(SAMPLE_TEXTS)
    assert [tokenizer.decode(row) for row in ids] == SAMPLE_TEXTS
    assert tokenizer.vocab_size == 258
    assert tokenizer.eos_id == 256
    assert tokenizer.decode([*ids[0], tokenizer.eos_id]) == SAMPLE_TEXTS[0]


def test_bpe_round_trips_text_and_compresses_the_corpus_it_was_trained_on(bpe_dir: Path) -> None:
    tokenizer = BpeTokenizer(bpe_dir)
    ids = tokenizer.encode_batch(SAMPLE_TEXTS)
    assert [tokenizer.decode(row) for row in ids] == SAMPLE_TEXTS
    story = generated_story(seed=0, index=1)
    assert len(tokenizer.encode_batch([story])[0]) < len(story.encode()) / 2
    assert tokenizer.vocab_size <= 400
    assert tokenizer.eos_id is not None


def test_bpe_training_is_deterministic(bpe_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "tokenizer"
    train_bpe(generated_corpus(seed=0, documents=200), vocab_size=400, directory=again)
    assert (again / TOKENIZER_FILE).read_text() == (bpe_dir / TOKENIZER_FILE).read_text()


def test_the_saved_bpe_loads_with_transformers_and_gives_the_same_ids(bpe_dir: Path) -> None:
    ours, theirs = BpeTokenizer(bpe_dir), PretrainedTokenizer(bpe_dir)
    assert theirs.encode_batch(SAMPLE_TEXTS) == ours.encode_batch(SAMPLE_TEXTS)
    assert (theirs.vocab_size, theirs.eos_id) == (ours.vocab_size, ours.eos_id)


def test_a_tokenizer_saved_by_an_earlier_attempt_is_reused_not_retrained(tmp_path: Path) -> None:
    spec = TokenizerSpec(kind="bpe", vocab_size=300)
    first = build_tokenizer(spec, tmp_path, generated_corpus(0, 50), True, lambda: None)
    saved = (tmp_path / "tokenizer" / TOKENIZER_FILE).read_text()
    # Other documents would train another vocabulary; a resume must not.
    second = build_tokenizer(spec, tmp_path, generated_corpus(9, 80), True, lambda: None)
    assert (tmp_path / "tokenizer" / TOKENIZER_FILE).read_text() == saved
    assert second.encode_batch(SAMPLE_TEXTS) == first.encode_batch(SAMPLE_TEXTS)


# --- packing and split -------------------------------------------------------------------------


def test_every_document_ends_with_the_end_of_text_id() -> None:
    tokenizer = ByteTokenizer()
    stream = token_stream(["ab", "c"], tokenizer)
    assert stream.tolist() == [97, 98, 256, 99, 256]


def test_windows_overlap_by_one_token_so_each_token_is_a_target_once() -> None:
    tokens = torch.arange(101, dtype=torch.int32)
    train, held_out = split_windows(tokens, seq_len=10, eval_fraction=0.0)
    assert held_out is None
    assert len(train) == 10
    inputs, targets = train.batch(range(len(train)))
    assert inputs.shape == targets.shape == (10, 10)
    assert torch.equal(targets.flatten(), torch.arange(1, 101))
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_the_eval_split_is_the_tail_of_the_stream_and_never_empty() -> None:
    tokens = torch.arange(1001, dtype=torch.int32)
    train, held_out = split_windows(tokens, seq_len=10, eval_fraction=0.05)
    assert held_out is not None
    assert (len(train), len(held_out)) == (95, 5)
    assert held_out.window(0)[0] == train.window(len(train) - 1)[-1] == 950
    _, tiny_eval = split_windows(torch.arange(41, dtype=torch.int32), 10, eval_fraction=0.01)
    assert tiny_eval is not None and len(tiny_eval) == 1


def test_a_corpus_too_small_for_one_training_window_is_refused_with_the_fix() -> None:
    with pytest.raises(SpecError, match=r"add documents, lower data.seq_len"):
        split_windows(torch.arange(15, dtype=torch.int32), seq_len=10, eval_fraction=0.1)


# --- sampler -----------------------------------------------------------------------------------

LAYOUT = BatchLayout(dp_size=4, grad_accum=2, micro_batch=3)


def _step(sampler: StepSampler, step: int) -> list[int]:
    return [
        index
        for rank in range(LAYOUT.dp_size)
        for micro in sampler.micro_batches(step, rank)
        for index in micro
    ]


def test_the_batch_of_a_step_and_rank_is_a_pure_function_of_seed_step_and_rank() -> None:
    fresh = StepSampler(num_windows=100, seed=5, layout=LAYOUT)
    used = StepSampler(num_windows=100, seed=5, layout=LAYOUT)
    for step in range(1, 30):  # walk several epochs, as the uninterrupted run does
        used.micro_batches(step, 0)
    for step in (17, 3, 9):  # and ask out of order, as a resume does
        assert used.micro_batches(step, 2) == fresh.micro_batches(step, 2)


def test_ranks_and_micro_batches_of_a_step_see_different_windows() -> None:
    sampler = StepSampler(num_windows=100, seed=0, layout=LAYOUT)
    batches = sampler.micro_batches(1, 0)
    assert len(batches) == LAYOUT.grad_accum
    assert all(len(micro) == LAYOUT.micro_batch for micro in batches)
    for step in (1, 2, 4):
        indices = _step(sampler, step)
        assert len(set(indices)) == LAYOUT.samples_per_step


def test_an_epoch_visits_every_window_once_and_the_next_epoch_reshuffles() -> None:
    sampler = StepSampler(num_windows=96, seed=0, layout=LAYOUT)  # 4 steps of 24 per epoch
    first_epoch = [i for step in range(1, 5) for i in _step(sampler, step)]
    second_epoch = [i for step in range(5, 9) for i in _step(sampler, step)]
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(96))
    assert first_epoch != second_epoch


def test_different_seeds_sample_different_orders() -> None:
    one = StepSampler(num_windows=1000, seed=0, layout=LAYOUT)
    other = StepSampler(num_windows=1000, seed=1, layout=LAYOUT)
    assert _step(one, 1) != _step(other, 1)


def test_eval_batches_of_different_ranks_are_disjoint_when_windows_suffice() -> None:
    per_rank = [eval_micro_batches(64, num_batches=4, micro_batch=2, dp_rank=r, dp_size=4)
                for r in range(4)]
    flat = [i for batches in per_rank for micro in batches for i in micro]
    assert sorted(flat) == list(range(32))

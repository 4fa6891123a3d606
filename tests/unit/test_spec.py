"""Job spec validation: every bad input names the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.domain.errors import SpecError
from scheduler.domain.spec import JobKind, check_files_exist, load_spec, load_spec_file, parse_spec
from tests.builders import spec_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_valid_spec_parses_with_defaults() -> None:
    spec = parse_spec(spec_dict())
    assert spec.kind is JobKind.PRETRAIN
    assert spec.resources.devices == "auto"
    assert spec.total_steps() == 4


def test_tokens_convert_to_steps_rounding_up() -> None:
    spec = parse_spec(spec_dict(work__steps=None, work__tokens=100))
    # global_batch 4 × seq_len 16 = 64 tokens per step; 100 tokens need 2 steps.
    assert spec.total_steps() == 2


BAD_SPECS = [
    ("unknown top-level field", {"colour": "blue"}, ["colour", "unknown field"]),
    ("unknown nested field", {"batch__size": 3}, ["batch.size", "unknown field"]),
    ("zero devices", {"resources__devices": 0}, ["resources.devices", "got 0"]),
    ("negative devices", {"resources__devices": -2}, ["resources.devices", "-2"]),
    ("devices word", {"resources__devices": "many"}, ["resources.devices", "'many'"]),
    ("bad kind", {"kind": "inference"}, ["kind", "pretrain", "'inference'"]),
    ("missing data", {"data": None}, ["data", "required"]),
    ("both steps and tokens", {"work__tokens": 10}, ["work", "exactly one"]),
    ("micro above global", {"batch__micro_batch": 8}, ["micro_batch 8", "global_batch 4"]),
    ("file source without path", {"data__source": "file"}, ["data.path is required"]),
    ("model with both sources", {"model__path": "/x"}, ["exactly one of model.architecture"]),
    ("negative lr", {"optimizer__lr": -1}, ["optimizer.lr", "-1"]),
    ("bad name", {"name": "has space"}, ["name", "'has space'"]),
]


@pytest.mark.parametrize(("case", "overrides", "fragments"), BAD_SPECS,
                         ids=[case for case, _, _ in BAD_SPECS])
def test_bad_spec_is_rejected_with_a_clear_message(case: str, overrides: dict[str, object],
                                                   fragments: list[str]) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(spec_dict(**overrides))
    for fragment in fragments:
        assert fragment in str(raised.value), f"{case}: {fragment!r} not in {raised.value}"


def test_malformed_yaml_names_the_line() -> None:
    with pytest.raises(SpecError, match=r"malformed YAML at line 3, column 6: mapping values"):
        load_spec("name: x\nkind: pretrain\n  bad: indent\n", source="job.yaml")


def test_yaml_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec("- a\n- b\n")


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec_file(tmp_path / "nope.yaml")


def test_relative_data_path_resolves_from_the_yaml_folder(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("hello world\n")
    (tmp_path / "job.yaml").write_text(
        "name: t\nkind: pretrain\nmodel: {architecture: llama}\n"
        "data: {path: corpus.txt}\nwork: {steps: 1}\n")
    spec = load_spec_file(tmp_path / "job.yaml")
    assert spec.data.path == str(tmp_path / "corpus.txt")
    check_files_exist(spec)


def test_missing_data_file_is_rejected(tmp_path: Path) -> None:
    spec = parse_spec(spec_dict(data__source="file", data__path=str(tmp_path / "gone.txt")))
    with pytest.raises(SpecError, match=r"data.path: .*gone.txt does not exist"):
        check_files_exist(spec)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid(example: Path) -> None:
    spec = load_spec_file(example)
    check_files_exist(spec)

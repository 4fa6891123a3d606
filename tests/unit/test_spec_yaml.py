"""Reading job YAML within bounds (scheduler.domain.spec_yaml): alias bombs, deep nesting, huge
and binary files fail at once with a SpecError that says what is wrong; modest aliases work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scheduler.domain.errors import SpecError
from scheduler.domain.spec import load_spec, load_spec_file
from scheduler.domain.spec_yaml import MAX_YAML_BYTES, YamlLimitError, load_yaml
from tests.builders import spec_dict


def billion_laughs(levels: int = 9) -> str:
    """The classic: each anchor repeats the one before nine times, 9^levels strings in all.

    Composing it is linear in its size; the expansion is what a loader without an alias bound
    (or anything walking the loaded data) would have to do, so this stays fast only if it is
    refused before the expansion."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def spec_yaml(**overrides: object) -> str:
    return yaml.safe_dump(spec_dict(**overrides))


def spec_with_a_bomb_in_its_model_config() -> str:
    """A spec otherwise valid whose free ``model.config`` holds the bomb: before the bounds it
    was accepted, and submitting it (9^9 strings as JSON) grew the CLI by gigabytes."""
    config = "".join(f"    {line}\n" for line in billion_laughs().splitlines())
    return spec_yaml(model=None) + "model:\n  architecture: llama\n  config:\n" + config


REFUSED = [
    ("billion laughs", billion_laughs(), "more than 100000 values once its aliases"),
    ("billion laughs in model.config", spec_with_a_bomb_in_its_model_config(),
     "more than 100000 values once its aliases"),
    ("an alias to itself", "a: &a [1, *a]\n", "refers to its own anchor"),
    ("nested 65 deep", "a: " + "[" * 65 + "]" * 65 + "\n", "nested more than 64 levels"),
    ("nested 5000 deep", "a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels"),
    ("above 1 MiB", "a: " + "x" * MAX_YAML_BYTES + "\n", "above the limit of 1048576"),
]


@pytest.mark.parametrize(("case", "text", "fragment"), REFUSED, ids=[c for c, _, _ in REFUSED])
def test_hostile_yaml_is_refused_with_a_spec_error(case: str, text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as raised:
        load_spec(text, source="bomb.yaml")
    assert str(raised.value).startswith("bomb.yaml: "), case
    assert fragment in str(raised.value), f"{case}: {raised.value}"


def test_the_limit_error_is_a_yaml_error_for_other_readers() -> None:
    with pytest.raises(yaml.YAMLError) as raised:
        load_yaml(billion_laughs())
    assert isinstance(raised.value, YamlLimitError)


def test_a_few_aliases_within_the_bounds_still_work() -> None:
    text = spec_yaml() + "env: &shared {WANDB_PROJECT: demo}\n"
    assert load_spec(text).env == {"WANDB_PROJECT": "demo"}
    assert load_yaml("base: &b {x: 1}\ncopy: *b\n") == {"base": {"x": 1}, "copy": {"x": 1}}


@pytest.mark.parametrize(("value", "fragment"), [
    ("1" + "0" * 5000, "a value cannot be read"),
    ("2026-13-45", "a value cannot be read"),
])
def test_a_value_python_cannot_hold_is_malformed_yaml(value: str, fragment: str) -> None:
    with pytest.raises(SpecError) as raised:
        load_spec(spec_yaml() + f"seed: {value}\n", source="job.yaml")
    assert "job.yaml: malformed YAML" in str(raised.value) and fragment in str(raised.value)


def test_a_binary_file_is_one_clean_error(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(SpecError) as raised:
        load_spec_file(job)
    assert str(raised.value) == (f"{job}: not UTF-8 text (byte 0x89 at offset 0); a job file "
                                 f"is YAML text, not a binary file")


def test_control_characters_are_malformed_yaml(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes(b"name: x\x00y\n")
    with pytest.raises(SpecError) as raised:
        load_spec_file(job)
    assert f"{job}: malformed YAML" in str(raised.value)


def test_a_file_above_1_mib_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    # Invalid YAML past its first line: a parser that read it would say so instead.
    job.write_text(spec_yaml() + "env: [\n" + "x" * (2 * MAX_YAML_BYTES))
    with pytest.raises(SpecError) as raised:
        load_spec_file(job)
    assert str(raised.value).startswith(f"{job}: 1048577 bytes is above the limit of 1048576")

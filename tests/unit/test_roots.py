"""The folders a tenant's jobs may read: one answer for missing and not allowed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.domain.errors import CorralError, SpecError
from scheduler.domain.roots import AllowedRoots, check_root_list, check_spec_files
from scheduler.domain.spec import parse_spec
from tests.builders import spec_dict


def data_spec(path: Path | str):  # type: ignore[no-untyped-def]
    return parse_spec(spec_dict(data={"source": "file", "path": str(path), "seq_len": 16}))


def refusal(spec, roots: AllowedRoots | None) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError) as refused:
        check_spec_files(spec, roots, "team-a")
    return str(refused.value)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.txt").write_text("text\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret\n")
    os.symlink(tmp_path / "outside" / "secret.txt", tmp_path / "data" / "link.txt")
    return tmp_path


def test_a_file_inside_the_roots_is_accepted(tree: Path) -> None:
    check_spec_files(data_spec(tree / "data" / "corpus.txt"),
                     AllowedRoots(data=(str(tree / "data"),)), "team-a")


def test_outside_the_roots_reads_exactly_like_missing(tree: Path) -> None:
    roots = AllowedRoots(data=(str(tree / "data"),))
    cases = {"outside": tree / "outside" / "secret.txt",
             "missing outside": tree / "outside" / "nothing.txt",
             "missing inside": tree / "data" / "nothing.txt",
             "link inside to outside": tree / "data" / "link.txt",
             "dot-dot out of a root": tree / "data" / ".." / "outside" / "secret.txt"}
    texts = {name: refusal(data_spec(path), roots).replace(str(path), "PATH")
             for name, path in cases.items()}
    assert len(set(texts.values())) == 1, texts
    assert "lies outside the folders tenant 'team-a' may read" in texts["outside"]
    assert "corral admin tenant set team-a --data-root" in texts["outside"]


def test_model_folders_have_their_own_roots(tree: Path) -> None:
    spec = parse_spec(spec_dict(kind="finetune", model={"path": str(tree / "data")},
                                tokenizer=None, finetune={"task": "classification",
                                                          "num_labels": 2}))
    with pytest.raises(SpecError, match="model.path"):
        check_spec_files(spec, AllowedRoots(data=(str(tree / "data"),)), "team-a")
    check_spec_files(spec, AllowedRoots(model=(str(tree),)), "team-a")


def test_embedded_mode_has_no_roots_but_still_says_missing(tree: Path) -> None:
    check_spec_files(data_spec(tree / "outside" / "secret.txt"), None)
    assert "does not exist or is not a file" in refusal(data_spec(tree / "nothing.txt"), None)


def test_a_package_reference_cannot_climb_out_of_its_package() -> None:
    spec = parse_spec(spec_dict(kind="finetune", model={"path": "pkg:scheduler/../../../etc"},
                                tokenizer=None, finetune={"task": "classification",
                                                          "num_labels": 2}))
    assert "leaves its package" in refusal(spec, None)


@pytest.mark.parametrize(("roots", "rule"), [
    (["relative/data"], "not an absolute folder path"),
    (["/data/../etc"], "'.' or '..'"),
    (["/"], "every file of the machine"),
    ([f"/d{i}" for i in range(40)], "at most 32"),
])
def test_roots_an_admin_sets_are_checked(roots: list[str], rule: str) -> None:
    with pytest.raises(CorralError, match=rule):
        check_root_list("data_roots", roots)


def test_a_data_file_of_another_kind_is_refused_at_submit_not_in_the_ranks() -> None:
    with pytest.raises(SpecError, match=r"data.path must name a .txt or .jsonl file"):
        data_spec("/srv/data/attempt-1.json")

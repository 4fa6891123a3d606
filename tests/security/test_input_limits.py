"""Finding 4: no size limits. A 50 MB spec of 50,000 env entries was stored and admitted, and a
YAML alias bomb hung the CLI at 2.4 GB. Now a real server refuses a body above 1 MiB (with or
without Content-Length) and a spec past its limits, and the real CLI refuses hostile or binary
job files at once, with one line, before anything reaches the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import spec_dict
from tests.integration.api_support import error_of
from tests.security.conftest import Deployment
from tests.server_process import cli_env, corral
from tests.unit.test_spec_yaml import billion_laughs, spec_with_a_bomb_in_its_model_config

JSON = {"Content-Type": "application/json"}
MIB = 1024 * 1024


def refused_with(answer: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert error_of(answer) == (status, code), answer.text[:500]
    message = answer.json()["error"]["message"]
    for fragment in fragments:
        assert fragment in message, message


def in_chunks(body: bytes, chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), chunk_bytes):
        yield body[start:start + chunk_bytes]


def spec_with_env(entries: int, value: str) -> dict[str, object]:
    return {"spec": spec_dict(env={f"VARIABLE_{i:05d}": value for i in range(entries)})}


def stored_jobs(deployment: Deployment, token: str) -> list[object]:
    with deployment.http(token) as http:
        items: list[object] = http.get("/v1/jobs", params={"all": "true"}).json()["items"]
        return items


def test_a_2_mb_body_answers_413_with_or_without_content_length(deployment: Deployment) -> None:
    body = b"{" + b" " * (2 * MIB) + b"}"
    with deployment.http(deployment.member("team-a")) as http:
        sized = http.post("/v1/jobs", content=body, headers=JSON)
        chunked = http.post("/v1/jobs", content=in_chunks(body), headers=JSON)
        assert "content-length" not in chunked.request.headers
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        for answer in (sized, chunked):
            refused_with(answer, 413, "too_large", "limit of 1048576 bytes (1 MiB)")
        assert http.get("/v1/whoami").status_code == 200  # the server serves on


def test_a_50_mb_spec_of_50000_env_entries_is_refused_and_not_stored(
        deployment: Deployment) -> None:
    member = deployment.member("team-a")
    with deployment.http(member) as http:
        refused_with(http.post("/v1/jobs", json=spec_with_env(50_000, "x" * 1000)), 413,
                     "too_large")
    assert stored_jobs(deployment, member) == []


def test_5000_tiny_env_entries_under_1_mib_are_refused_by_the_spec_limit(
        deployment: Deployment) -> None:
    member = deployment.member("team-a")
    request = spec_with_env(5000, "")
    with deployment.http(member) as http:
        for path in ("/v1/jobs", "/v1/plan"):
            answer = http.post(path, json=request)
            assert len(answer.request.content) < MIB
            refused_with(answer, 422, "invalid_spec", "env: 5000 variables, above the limit "
                                                      "of 128")
    assert stored_jobs(deployment, member) == []


def test_a_large_secret_env_value_is_refused_without_being_echoed(
        deployment: Deployment) -> None:
    secret = "hunter2-" * 5000  # 40,000 bytes, above the 32 KiB of one value
    spec = spec_dict(env={"HF_TOKEN": {"value": secret, "secret": True}})
    with deployment.http(deployment.member("team-a")) as http:
        answer = http.post("/v1/jobs", json={"spec": spec})
    refused_with(answer, 422, "invalid_spec", "env.HF_TOKEN: its value has 40000 bytes")
    assert "hunter2" not in answer.text


def test_the_cli_refuses_a_billion_laughs_file_before_calling_the_server(
        deployment: Deployment, tmp_path: Path) -> None:
    member = deployment.member("team-a")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(spec_with_a_bomb_in_its_model_config())
    env = cli_env(tmp_path, CORRAL_SERVER=deployment.url, CORRAL_TOKEN=member)
    # Without the bound this process would grow for minutes; the timeout only ends a failure.
    done = corral(env, "submit", str(bomb), timeout_s=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert " ".join(done.stderr.split()).startswith(
        f"error: {bomb}: the YAML stands for more than 100000 values once its aliases")
    assert stored_jobs(deployment, member) == []


BINARY = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00\xff\xfe"
BAD_FILES = [
    ("submit", "binary", BINARY, "not UTF-8 text (byte 0xff at offset 20)"),
    ("run", "binary", BINARY, "not UTF-8 text (byte 0xff at offset 20)"),
    ("plan", "binary", BINARY, "not UTF-8 text (byte 0xff at offset 20)"),
    ("submit", "NUL bytes", b"name: a\x00b\n", "malformed YAML"),
    ("submit", "2 MiB", b"name: " + b"x" * (2 * MIB) + b"\n",
     "1048577 bytes is above the limit of 1048576"),
    ("plan", "alias bomb", billion_laughs().encode(), "more than 100000 values"),
    ("submit", "nested deep", b"a: " + b"[" * 10_000 + b"]" * 10_000 + b"\n",
     "nested more than 64 levels"),
]


@pytest.mark.parametrize(("command", "kind", "content", "problem"), BAD_FILES,
                         ids=[f"{command} {kind}" for command, kind, _, _ in BAD_FILES])
def test_a_bad_job_file_is_one_clean_error_line(command: str, kind: str, content: bytes,
                                                problem: str, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes(content)
    done = corral(cli_env(tmp_path), command, str(job), timeout_s=60)
    assert done.returncode == 2, (kind, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    said = " ".join(done.stderr.split())
    assert said.startswith(f"error: {job}: ") and problem in said, said

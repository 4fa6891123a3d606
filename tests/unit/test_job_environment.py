"""What a job may put in its ranks' environment, and what the ranks inherit from the service."""

from __future__ import annotations

import pytest

from scheduler.domain.errors import SpecError
from scheduler.domain.spec import parse_spec
from tests.builders import spec_dict
from workers.backends.environment import rank_environment, service_environment

HOOKS = [
    "LD_PRELOAD", "LD_LIBRARY_PATH", "ld_preload", "LD_AUDIT", "DYLD_INSERT_LIBRARIES",
    "PYTHONHOME", "PYTHONWARNINGS", "PYTHONSTARTUP", "PYTHONPATH", "PYTHONINSPECT",
    "BASH_ENV", "BASH_FUNC_ls%%", "ENV", "SHELLOPTS", "PS4", "GCONV_PATH", "GLIBC_TUNABLES",
    "MALLOC_CONF", "NCCL_DEBUG_FILE", "NCCL_NET_PLUGIN", "CUDA_INJECTION64_PATH",
    "TORCH_EXTENSIONS_DIR", "OMP_TOOL_LIBRARIES", "XLA_FLAGS", "PERL5OPT", "RUBYOPT",
    "RAY_ADDRESS", "RAY_AUTH_TOKEN",
    "NODE_OPTIONS", "JAVA_TOOL_OPTIONS", "LOCPATH", "HOSTALIASES",
]
RESERVED = ["CORRAL_DATABASE_URL", "CORRAL_TOKEN", "RANK", "MASTER_ADDR", "PATH", "HOME",
            "CUDA_VISIBLE_DEVICES", "TORCHELASTIC_RUN_ID", "TMPDIR"]
ALLOWED = ["WANDB_PROJECT", "MY_FLAG", "HF_TOKEN", "NCCL_DEBUG", "OMP_NUM_THREADS",
           "TORCH_DISTRIBUTED_DEBUG", "PYTORCH_CUDA_ALLOC_CONF", "PYTHONHASHSEED", "lowercase"]


@pytest.mark.parametrize("name", HOOKS)
def test_loader_interpreter_and_shell_hooks_are_refused_at_submit(name: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(spec_dict(env={name: "/tmp/x.so"}))
    message = str(refused.value)
    if "not a variable name" not in message:
        assert f"env: {name} is refused" in message and "/tmp/x.so" not in message


@pytest.mark.parametrize("name", RESERVED)
def test_what_corral_sets_for_the_ranks_is_not_the_jobs(name: str) -> None:
    with pytest.raises(SpecError, match=f"env: {name} is set by Corral"):
        parse_spec(spec_dict(env={name: "x"}))


@pytest.mark.parametrize("name", ALLOWED)
def test_application_variables_and_tunables_pass(name: str) -> None:
    assert parse_spec(spec_dict(env={name: "1"})).env_values() == {name: "1"}


SERVICE_ENV = {
    "CORRAL_DATABASE_URL": "postgresql+psycopg://corral:hunter2@db/corral",
    "CORRAL_TOKEN": "crl_operator", "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "HOME": "/root", "PATH": "/root/.local/bin:/usr/bin", "LD_PRELOAD": "/opt/operator.so",
    "PYTHONSTARTUP": "/root/.pythonrc", "SSH_AUTH_SOCK": "/tmp/agent",
    "LANG": "C.UTF-8", "OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "2",
    "NCCL_SOCKET_IFNAME": "eth0", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
}


def test_ranks_inherit_only_the_allowlist_of_the_services_environment() -> None:
    env = rank_environment(SERVICE_ENV, {"MY_FLAG": "1"}, home="/runs/job-7",
                           python="/opt/venv/bin/python", user="nobody")
    for secret in ("CORRAL_DATABASE_URL", "CORRAL_TOKEN", "AWS_SECRET_ACCESS_KEY",
                   "SSH_AUTH_SOCK", "LD_PRELOAD", "PYTHONSTARTUP"):
        assert secret not in env
    assert not any("hunter2" in value or "crl_operator" in value for value in env.values())
    assert env["HOME"] == env["TMPDIR"] == "/runs/job-7"
    assert env["PATH"].startswith("/opt/venv/bin:") and "/root" not in env["PATH"]
    assert env["USER"] == "nobody" and env["MY_FLAG"] == "1"
    for kept in ("LANG", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "NCCL_SOCKET_IFNAME",
                 "LD_LIBRARY_PATH"):
        assert env[kept] == SERVICE_ENV[kept]


def test_a_stored_spec_with_a_hook_is_refused_again_at_launch() -> None:
    with pytest.raises(ValueError, match="LD_PRELOAD is refused"):
        rank_environment({}, {"LD_PRELOAD": "/tmp/x.so"}, home="/runs/job-1")


def test_the_supervisor_gets_no_job_variable_and_no_secret() -> None:
    env = service_environment(SERVICE_ENV, "/opt/venv/bin/python")
    assert "CORRAL_DATABASE_URL" not in env and "HOME" not in env
    assert env["PATH"].startswith("/opt/venv/bin:")

"""Which environment variables a job may set for its ranks, and which the ranks inherit.

A rank's environment is built, never inherited whole (:mod:`workers.backends.environment`):

1. from the scheduler's own environment only the names in :data:`INHERITED_NAMES` and
   :data:`INHERITED_PREFIXES` — what the interpreter, torch, the BLAS libraries and the
   accelerator runtimes need, set by the operator. Nothing else of the service passes: not
   ``CORRAL_DATABASE_URL``, not a ``CORRAL_TOKEN``, not a cloud credential;
2. then the variables Corral sets itself (:data:`RESERVED_NAMES`, :data:`RESERVED_PREFIXES`);
3. then the job's ``env``, whose names are checked at submit by :func:`check_job_env_name`.

A job may set any name of its application (``WANDB_PROJECT``, ``MY_FLAG``) and the runtime
tunables in :data:`TUNABLE_NAMES`, but never a name in a namespace that makes a loader, an
interpreter or a shell run code or open files of the job's choosing
(:data:`REFUSED_PREFIXES`, :data:`REFUSED_NAMES`): ``LD_PRELOAD`` runs a shared object in every
process of the gang, ``PYTHONSTARTUP`` and ``PYTHONWARNINGS`` import modules, ``BASH_ENV`` runs
a script in every non-interactive shell, ``NCCL_DEBUG_FILE`` writes where it says. The refused
namespaces are whole prefixes (every ``LD_*``, every ``PYTHON*``), so a hook added to a future
loader or interpreter under its own prefix is refused too.
"""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

RESERVED_PREFIXES = ("CORRAL_", "TORCHELASTIC_")
RESERVED_NAMES = frozenset({
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
    "CUDA_VISIBLE_DEVICES", "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "PWD", "SHELL",
})
"""Variables the backends set for the ranks themselves: a job may not override them."""

REFUSED_PREFIXES = (
    # the dynamic loader (glibc ld.so(8), macOS dyld(1)) and glibc's own hooks (GCONV_PATH
    # loads a shared object; GLIBC_TUNABLES has had loader exploits, CVE-2023-4911)
    "LD_", "DYLD_", "GLIBC_", "MALLOC_", "GCONV_", "GMON_",
    # interpreters that would run code or read files named here (PYTHONSTARTUP,
    # PYTHONWARNINGS imports a module, PERL5OPT, RUBYOPT, NODE_OPTIONS, JAVA_TOOL_OPTIONS)
    "PYTHON", "PERL", "RUBY", "NODE_", "JAVA_", "_JAVA_", "JDK_", "LUA_", "TCL",
    # shells: start-up files and option imports (bash(1): BASH_ENV, BASH_FUNC_*, BASHOPTS)
    "BASH",
    # runtimes whose variables name files to write or libraries to load: NCCL_NET_PLUGIN,
    # NCCL_DEBUG_FILE, CUDA_INJECTION64_PATH, TORCH_EXTENSIONS_DIR, OMP_TOOL_LIBRARIES,
    # XLA_FLAGS=--xla_dump_to, PJRT plugin paths
    "NCCL_", "TORCH", "PYTORCH_", "CUDA_", "NVIDIA_", "XLA_", "TPU_", "PJRT_", "OMP_",
    "KMP_", "MKL_", "OPENBLAS_", "GOMP_",
    # Ray's client and runtime: RAY_ADDRESS, RAY_AUTH_TOKEN(_PATH) would point a rank at the
    # cluster's control plane with the scheduler's credentials (docs/ray.md)
    "RAY_",
)
"""Namespaces a job may not set (matched case-insensitively), except :data:`TUNABLE_NAMES`."""

REFUSED_NAMES = frozenset({
    # shells: a start-up file (ENV, sh(1)), option imports, prompts run as commands
    "ENV", "SHELLOPTS", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH",
    # glibc: locale and message catalogues, resolver configuration, hostname aliases
    "LOCPATH", "NLSPATH", "HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN", "TZDIR",
    # misc. programs that read a file named by a variable
    "EDITOR", "VISUAL", "PAGER", "BROWSER", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS",
    "SSH_ASKPASS", "LESSOPEN", "LESSCLOSE",
})
"""Single names a job may not set (matched case-insensitively)."""

TUNABLE_NAMES = frozenset({
    # NCCL's documented tuning and diagnostics that open no file (NCCL "Environment Variables")
    "NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_ALGO", "NCCL_PROTO", "NCCL_MIN_NCHANNELS",
    "NCCL_MAX_NCHANNELS", "NCCL_BUFFSIZE", "NCCL_IB_DISABLE", "NCCL_P2P_DISABLE",
    "NCCL_SHM_DISABLE", "NCCL_NVLS_ENABLE", "NCCL_CROSS_NIC", "NCCL_NET_GDR_LEVEL",
    # torch's documented switches that open no file
    "TORCH_DISTRIBUTED_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCH_NCCL_BLOCKING_WAIT",
    "TORCH_NCCL_AVOID_RECORD_STREAMS", "TORCH_CPP_LOG_LEVEL", "TORCH_SHOW_CPP_STACKTRACES",
    "PYTORCH_CUDA_ALLOC_CONF", "CUDA_LAUNCH_BLOCKING", "CUDA_DEVICE_MAX_CONNECTIONS",
    # thread counts and library switches
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED", "PYTHONUNBUFFERED",
})
"""Runtime tunables a job may set although their namespace is refused: none opens a file or
loads code; each changes speed, determinism or diagnostics of the job's own ranks."""

INHERITED_NAMES = frozenset({
    "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_HOME",
    "CUDA_PATH", "GLOO_SOCKET_IFNAME", "CPU_NUM_DEVICES",
})
"""Operator-set variables the ranks need and inherit from the scheduler's environment."""

INHERITED_PREFIXES = (
    "LC_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOMP_", "NCCL_", "NVIDIA_", "PJRT_",
    "XLA_", "TPU_",
)
"""Operator-set namespaces the ranks inherit: locales, BLAS and OpenMP settings (on some
processors ``OPENBLAS_CORETYPE`` keeps OpenBLAS from crashing), the accelerator runtimes."""


def check_job_env_name(name: str) -> None:
    """Raise ValueError saying why a job may not set ``name``; return if it may."""
    if not ENV_NAME.match(name):
        raise ValueError(f"env: {name!r} is not a variable name (letters, digits and _, not "
                         f"starting with a digit)")
    upper = name.upper()
    if upper in RESERVED_NAMES or upper.startswith(RESERVED_PREFIXES):
        raise ValueError(f"env: {name} is set by Corral for the ranks; choose another name")
    if upper in TUNABLE_NAMES:
        return
    if upper in REFUSED_NAMES or upper.startswith(REFUSED_PREFIXES):
        raise ValueError(
            f"env: {name} is refused: a loader, interpreter, shell or runtime would read it to "
            f"load code or open files, so no job may set it. Remove it; runtime tunables that "
            f"are allowed: see docs/security.md (e.g. NCCL_DEBUG, OMP_NUM_THREADS)")


def inherited(name: str) -> bool:
    """Whether the ranks inherit ``name`` from the scheduler's environment."""
    return name in INHERITED_NAMES or name.startswith(INHERITED_PREFIXES)

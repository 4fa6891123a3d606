"""How big a job spec may be: its strings, its env, its free maps and its lists.

A spec arrives as a YAML file or an HTTP body, is stored, validated again whenever it is read,
and its env becomes the ranks' environment. Without bounds one spec could cost the server
memory and time out of all proportion (a 50 MB spec of 50,000 env entries was once stored and
admitted). Every bound is far above what a real job writes:

=================================  ===========  ===============================================
what                               at most      why this much
=================================  ===========  ===============================================
a name (job, tenant, pool,         128 chars    the names of the REST contract (docs/api.md)
accelerator, record field)
a path (data, model, tokenizer)    4096 chars   PATH_MAX on Linux
env entries                        128          a launch script sets a dozen
env name                           128 chars
env value                          32 KiB       a PEM bundle or a JSON credential fits; Linux
                                                refuses one string above 128 KiB (MAX_ARG_STRLEN)
env names and values together      256 KiB      a quarter of what Linux lets a process start with
                                                (ARG_MAX 2 MiB for arguments and environment)
free map (model.config,            256 keys a level, 4 levels, 4096 values in all, strings of
compress.student)                  4096 chars, lists of 1024 (a per-layer list of a deep model)
a list (lora.target_modules)       64 entries
=================================  ===========  ===============================================

Messages name the field and the limit, never an env value: it may be a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

MAX_NAME_CHARS: Final = 128
MAX_PATH_CHARS: Final = 4096
MAX_DEADLINE_CHARS: Final = 64
"""An ISO 8601 time with its zone and fractions fits in 40."""
MAX_LIST_ENTRIES: Final = 64

MAX_ENV_ENTRIES: Final = 128
MAX_ENV_NAME_CHARS: Final = 128
MAX_ENV_VALUE_BYTES: Final = 32 * 1024
MAX_ENV_TOTAL_BYTES: Final = 256 * 1024

MAX_MAP_KEYS: Final = 256
MAX_MAP_DEPTH: Final = 4
MAX_MAP_VALUES: Final = 4096
MAX_MAP_STRING_CHARS: Final = 4096
MAX_MAP_LIST_ENTRIES: Final = 1024


def _kib(size: int) -> str:
    return f"{size // 1024} KiB"


def _start(text: str) -> str:
    """The first characters of a long name, to say which one without printing all of it."""
    return repr(text if len(text) <= 24 else f"{text[:24]}…")


def check_env_sizes(env: Mapping[str, str]) -> None:
    """Raise ValueError when ``env`` (NAME -> value) has too many, too long or too large
    entries; the message names the variable, never its value."""
    if len(env) > MAX_ENV_ENTRIES:
        raise ValueError(f"env: {len(env)} variables, above the limit of {MAX_ENV_ENTRIES}; "
                         f"put more settings in a file the job reads")
    total = 0
    for name, value in env.items():
        if len(name) > MAX_ENV_NAME_CHARS:
            raise ValueError(f"env: the name {_start(name)} has {len(name)} characters, above "
                             f"the limit of {MAX_ENV_NAME_CHARS}")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_ENV_VALUE_BYTES:
            raise ValueError(f"env.{name}: its value has {size} bytes, above the limit of "
                             f"{MAX_ENV_VALUE_BYTES} ({_kib(MAX_ENV_VALUE_BYTES)}); put large "
                             f"data in a file and its path in the variable")
        total += len(name.encode()) + size
    if total > MAX_ENV_TOTAL_BYTES:
        raise ValueError(f"env: names and values hold {total} bytes in all, above the limit of "
                         f"{MAX_ENV_TOTAL_BYTES} ({_kib(MAX_ENV_TOTAL_BYTES)}); put large data "
                         f"in files the job reads")


def check_free_map(value: Mapping[str, Any], where: str) -> None:
    """Raise ValueError when a free-form map (``model.config``) is too wide, too deep, too
    large in all, or holds a string or list above its bound; the message names the place."""
    _walk(value, where, depth=1, budget=MAX_MAP_VALUES)


def _walk(value: Any, where: str, depth: int, budget: int) -> int:
    """The number of values in ``value`` (itself included), checked against every bound;
    ``budget`` is how many values are still allowed, so a huge map stops early."""
    if budget < 1:
        raise ValueError(f"{where}: more than {MAX_MAP_VALUES} values in all; a model config "
                         f"has a few dozen")
    if isinstance(value, str):
        if len(value) > MAX_MAP_STRING_CHARS:
            raise ValueError(f"{where}: a string of {len(value)} characters, above the limit "
                             f"of {MAX_MAP_STRING_CHARS}")
        return 1
    if not isinstance(value, Mapping | list | tuple):
        return 1
    if depth > MAX_MAP_DEPTH:
        raise ValueError(f"{where}: nested more than {MAX_MAP_DEPTH} levels deep")
    if isinstance(value, Mapping):
        if len(value) > MAX_MAP_KEYS:
            raise ValueError(f"{where}: {len(value)} keys, above the limit of {MAX_MAP_KEYS}")
        items = [(f"{where}.{key}", key, item) for key, item in value.items()]
    else:
        if len(value) > MAX_MAP_LIST_ENTRIES:
            raise ValueError(f"{where}: a list of {len(value)} entries, above the limit of "
                             f"{MAX_MAP_LIST_ENTRIES}")
        items = [(f"{where}[{index}]", None, item) for index, item in enumerate(value)]
    used = 1
    for place, key, item in items:
        if isinstance(key, str) and len(key) > MAX_NAME_CHARS:
            raise ValueError(f"{where}: the key {_start(key)} has {len(key)} characters, above "
                             f"the limit of {MAX_NAME_CHARS}")
        used += _walk(item, place, depth + 1, budget - used)
    return used

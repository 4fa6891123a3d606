"""Which server the CLI talks to, with which token: flags, environment, then the config file.

- server: ``corral --server URL`` or ``$CORRAL_SERVER``; without either the CLI stays in
  embedded mode and reads no config file.
- token: ``$CORRAL_TOKEN``, else the config file's ``token`` when the file names the same
  server (a token is never sent to a server it was not stored for). There is no ``--token``
  flag: shell history keeps flags.
- config file: ``$CORRAL_CONFIG``, default ``~/.config/corral/config.yaml``, keys ``server`` and
  ``token``, written by ``corral login`` with mode 0600. A file that group or others may read or
  write is refused rather than trusted.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from scheduler.domain.errors import CorralError
from scheduler.domain.spec_yaml import YamlLimitError, load_yaml, read_yaml_bytes

CONFIG_ENV = "CORRAL_CONFIG"
TOKEN_ENV = "CORRAL_TOKEN"
DEFAULT_CONFIG = "~/.config/corral/config.yaml"
CONFIG_KEYS = ("server", "token")


@dataclass(frozen=True, slots=True)
class Remote:
    """A server to call and the token to call it with (None: the server runs without auth)."""

    server_url: str
    token: str | None


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def shown(path: Path) -> str:
    """``path`` as a user would type it: the home folder as ``~``."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def read_config(path: Path) -> dict[str, str]:
    """The config file's keys; {} when there is none. Refuses a file others may read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return {}
    if mode & 0o044:
        raise CorralError(f"{shown(path)} is readable by others (mode {mode:04o}): chmod 600 it")
    if mode & 0o022:
        raise CorralError(f"{shown(path)} is writable by others (mode {mode:04o}): chmod 600 it")
    try:
        data = load_yaml(read_yaml_bytes(path).decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise CorralError(f"{shown(path)} is not UTF-8 text; run `corral login URL` again to "
                          f"rewrite it") from None
    except YamlLimitError as err:
        raise CorralError(f"{shown(path)}: {err}; the file holds only a server and a "
                          f"token") from None
    except yaml.YAMLError as err:
        raise CorralError(f"{shown(path)}: malformed YAML ({err}); fix it or run "
                          f"`corral login URL` again") from None
    if not isinstance(data, dict):
        raise CorralError(f"{shown(path)} must be a mapping with keys server and token")
    unknown = sorted(str(key) for key in data if key not in CONFIG_KEYS)
    if unknown:
        raise CorralError(f"{shown(path)}: unknown key(s) {', '.join(unknown)}; the file holds "
                          f"only {' and '.join(CONFIG_KEYS)}")
    return {str(key): str(value) for key, value in data.items() if value is not None}


def resolve_remote(server_option: str | None) -> Remote | None:
    """The server and token for this invocation, or None for embedded mode."""
    if not server_option:
        return None
    server = server_option.rstrip("/")
    config = read_config(config_path())
    token = os.environ.get(TOKEN_ENV)
    if not token and config.get("token"):
        issued_for = config.get("server", "").rstrip("/")
        token = config["token"] if issued_for in ("", server) else None
    return Remote(server, token or None)


def write_config(path: Path, server: str, token: str) -> None:
    """Replace the config file, created with mode 0600 from the first byte (never chmod after
    writing: the token must not be readable for an instant)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump({"server": server.rstrip("/"), "token": token}, handle,
                           sort_keys=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

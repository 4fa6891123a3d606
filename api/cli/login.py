"""``corral login URL``: check a token against a server and keep both in the config file."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import click

from api.cli.config import config_path, shown, write_config
from scheduler.domain.errors import CorralError


def read_token() -> str:
    """The token from stdin when it is piped (``corral login URL < token.txt``), else from a
    prompt that does not echo; never from a flag, which shell history would keep."""
    if sys.stdin.isatty():
        token = click.prompt("token", hide_input=True, err=True)
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CorralError("no token given: pipe it in (corral login URL < token-file) or type "
                          "it at the prompt; an admin issues one with `corral admin token issue`")
    return token


@click.command()
@click.argument("url")
def login(url: str) -> None:
    """Check a token (read from stdin or a prompt) against the server at URL with /v1/whoami,
    then store URL and token in the config file ($CORRAL_CONFIG, default
    ~/.config/corral/config.yaml, mode 0600); commands given --server URL (or $CORRAL_SERVER)
    then send that token."""
    if not url.startswith(("http://", "https://")):
        raise CorralError(f"URL must start with http:// or https://, got {url!r}")
    host = urlsplit(url).hostname or ""
    if url.startswith("http://"):
        from api.settings import is_loopback

        if not is_loopback(host):
            click.echo(f"warning: {url} is plain HTTP: the token travels unencrypted; prefer "
                       f"https:// (TLS at the load balancer)", err=True)
    token = read_token()
    from api.client import CorralClient  # httpx loads only for commands that call a server

    with CorralClient(url, token) as client:
        who = client.whoami()
    path = config_path()
    write_config(path, url, token)
    server = url.rstrip("/")
    click.echo(f"logged in to {server} as tenant {who['tenant']} ({who['role']}); wrote "
               f"{shown(path)} (mode 0600). Use it with `corral --server {server} ...` or "
               f"`export CORRAL_SERVER={server}`")

"""The ``deltahub`` group and what every command shares: hub options, ``--json``, and :func:`hub_command`.

Every command that talks to the hub is declared with :func:`hub_command`: it
adds ``--hub``, ``--token`` and ``--json`` (and ``--quiet`` where the command
shows progress), opens the hub for the call and closes it after, and hands
the command the open :class:`~deltahub_client.hub.Hub` and an :class:`Output`.
Errors print the hub's message on stderr and exit 1 (2 for usage errors, as
click does).
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import yaml

from deltahub import limits
from deltahub.artifacts import DomainCard
from deltahub.errors import DeltahubError, InvalidInputError
from deltahub_client.channel import TLSOptions
from deltahub_client.hub import Hub


def hub_options(fn, *, root: bool = False):
    # Only the root reads the environment, so an explicit flag anywhere wins over it.
    fn = click.option("--hub", "hub_address", envvar="DELTAHUB_ADDRESS" if root else None, default=None,
                      help="HOST:PORT of the hub (DELTAHUB_ADDRESS).")(fn)
    fn = click.option("--token", envvar="DELTAHUB_TOKEN" if root else None, default=None,
                      help="Bearer token (DELTAHUB_TOKEN).")(fn)
    return fn


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def limit_options(fn):
    """One flag per declared limit (deltahub.limits), with its default and help."""
    for _, f in reversed(list(limits.declared())):
        kind = int if f.type in (int, "int") else float
        fn = click.option(f.metadata["flag"], f.name, type=kind, default=f.default, show_default=True,
                          help=f.metadata["help"])(fn)
    return fn


def _tls_options(fn):
    fn = click.option("--tls-ca", envvar="DELTAHUB_TLS_CA", default=None, type=click.Path(dir_okay=False),
                      help="PEM CA that signed the hub's certificate; turns TLS on (DELTAHUB_TLS_CA).")(fn)
    fn = click.option("--tls/--no-tls", "tls", envvar="DELTAHUB_TLS", default=None,
                      help="TLS verified by the system's roots (DELTAHUB_TLS=1); on by itself with --tls-ca.")(fn)
    fn = click.option("--tls-cert", envvar="DELTAHUB_TLS_CERT", default=None, type=click.Path(dir_okay=False),
                      help="Client certificate for a hub that asks for one (mutual TLS).")(fn)
    fn = click.option("--tls-key", envvar="DELTAHUB_TLS_KEY", default=None, type=click.Path(dir_okay=False),
                      help="The client certificate's key.")(fn)
    fn = click.option("--tls-server-name", envvar="DELTAHUB_TLS_SERVER_NAME", default=None,
                      help="Name to verify the hub's certificate against, when dialing it by another.")(fn)
    return fn


def open_hub(hub_address: str | None, token: str | None, *, progress: bool) -> Hub:
    """The hub a command names, else the root's (flags, then the environment), with the root's TLS options."""
    root = click.get_current_context().find_root().params
    tls = TLSOptions(root.get("tls"), root.get("tls_ca"), root.get("tls_cert"), root.get("tls_key"),
                     root.get("tls_server_name"))
    return Hub(hub_address or root.get("hub_address"), token if token is not None else root.get("token"),
               progress=progress, tls=tls)


@dataclass(frozen=True)
class Output:
    """How a command prints: ``--json`` documents or text; ``quiet`` (``-q``) where the command has it."""

    json: bool = False
    quiet: bool = False

    def emit(self, doc: Any, text: str) -> None:
        click.echo(json.dumps(doc, indent=2, sort_keys=True) if self.json else text)


def hub_command(name: str | None = None, *, group: click.Group | None = None, quiet_help: str | None = None,
                json_output: bool = True, bars: bool = True, **settings) -> Callable:
    """Declares a command that talks to the hub; the function is called as ``fn(hub, out, **its options)``.

    Args:
        group: where the command goes (``main`` by default).
        quiet_help: add ``--quiet/-q`` with this help (commands that show progress bars).
        json_output: add ``--json``.
        bars: whether the hub may draw progress bars at all (off for daemons).
    """
    def wrap(fn: Callable) -> click.Command:
        @functools.wraps(fn)
        def run(hub_address, token, as_json=False, quiet=False, **options):
            out = Output(json=as_json, quiet=quiet)
            with open_hub(hub_address, token, progress=bars and not (quiet or as_json)) as hub:
                return fn(hub, out, **options)

        cmd: Callable = run
        if quiet_help:
            cmd = click.option("--quiet", "-q", is_flag=True, help=quiet_help)(cmd)
        cmd = hub_options(cmd)
        if json_output:
            cmd = json_option(cmd)
        return (group or main).command(name, **settings)(cmd)

    return wrap


def parse_pairs(items: list[str] | tuple[str, ...], what: str = "label") -> dict[str, str]:
    """KEY=VALUE options (labels, method parameters) as a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{what} {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def load_card(path: str | None) -> DomainCard | None:
    if not path:
        return None
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InvalidInputError(f"card file {path}: {err}") from None
    return DomainCard.from_dict(doc)


def comma_floats(text: str | None, flag: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise InvalidInputError(f"{flag} must be comma-separated numbers, got {text!r}") from None


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeltahubError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@functools.partial(hub_options, root=True)
@_tls_options
@click.version_option(package_name="deltahub")
def main(hub_address, token, tls, tls_ca, tls_cert, tls_key, tls_server_name):
    """deltahub: a model hub for weight deltas (adapters and task vectors)."""

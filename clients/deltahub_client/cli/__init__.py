"""The ``deltahub`` command line, built on the SDK.

``app`` holds the group and what every command shares (one decorator,
:func:`~deltahub_client.cli.app.hub_command`); each other module holds the
commands of one area, registered on the group when imported here. Every
command that prints results takes ``--json``.
"""

from deltahub_client.cli.app import main
from deltahub_client.cli import artifacts, jobs, merge, route, server, train  # noqa: F401 - register the commands

__all__ = ["main"]

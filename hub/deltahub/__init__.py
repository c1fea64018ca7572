"""deltahub core: revisions of weight deltas, their storage, formats and math.

No gRPC inside: the server (``deltahub_server``) and the SDK
(``deltahub_client``) are the edges that speak the wire protocol.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deltahub")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

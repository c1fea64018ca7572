"""The gRPC channel to a hub: plaintext, TLS (a CA file or the system roots), or mutual TLS."""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc

from deltahub.errors import InvalidInputError
from deltahub.pem import read_pem

MESSAGE_LIMIT = 2 * (1 << 20) + (64 << 10)  # two 1 MiB chunks and their framing
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class TLSOptions:
    """How to reach a hub that speaks TLS. Each field falls back to its ``DELTAHUB_TLS*`` variable.

    ``enabled`` None means: TLS when a CA or a client certificate is given, or ``DELTAHUB_TLS`` is set;
    with no CA the system's roots verify the hub.
    """

    enabled: bool | None = None
    ca: str | os.PathLike | None = None
    cert: str | os.PathLike | None = None   # client certificate chain, for a hub that asks for one (mutual TLS)
    key: str | os.PathLike | None = None
    server_name: str | None = None          # verify the certificate against this name, not the address's host

    def resolved(self) -> "TLSOptions":
        env = os.environ
        ca = self.ca or env.get("DELTAHUB_TLS_CA") or None
        cert = self.cert or env.get("DELTAHUB_TLS_CERT") or None
        key = self.key or env.get("DELTAHUB_TLS_KEY") or None
        enabled = self.enabled
        if enabled is None:
            enabled = bool(ca or cert) or env.get("DELTAHUB_TLS", "").lower() in _TRUE
        if bool(cert) != bool(key):
            raise InvalidInputError("a client certificate needs both --tls-cert and --tls-key")
        return TLSOptions(enabled, ca, cert, key, self.server_name or env.get("DELTAHUB_TLS_SERVER_NAME") or None)


def open_channel(address: str, tls: TLSOptions | None = None) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]
    tls = (tls or TLSOptions()).resolved()
    if not tls.enabled:
        return grpc.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_pem(tls.ca, "--tls-ca"), private_key=read_pem(tls.key, "--tls-key"),
        certificate_chain=read_pem(tls.cert, "--tls-cert"),
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(address, credentials, options=options)

"""The deltahub gRPC server: thin servicers over :class:`deltahub.store.HubStore`."""

from deltahub_server.app import ServerConfig, create_server, serve

__all__ = ["ServerConfig", "create_server", "serve"]

"""The deltahub gRPC server: thin servicers over :class:`deltahub.store.HubStore`."""

from deltahub_server.app import RunningServer, ServerConfig, create_server, serve

__all__ = ["RunningServer", "ServerConfig", "create_server", "serve"]

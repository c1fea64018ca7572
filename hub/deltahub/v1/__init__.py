"""Generated protobuf and gRPC modules (``make proto``); only ``deltahub_server``
and ``deltahub_client`` import them."""

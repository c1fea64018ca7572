"""The deltahub Python SDK and command line.

    from deltahub_client import Hub
    hub = Hub("127.0.0.1:50051")
    hub.push("./my-adapter", "finance/lora-v1", kind="adapter", base="base/llama@main")
"""

from deltahub.artifacts import DeleteResult
from deltahub_client.channel import TLSOptions
from deltahub_client.hub import Hub
from deltahub_client.results import EvalResult, MergeResult, PushResult, TaskVectorResult

__all__ = ["Hub", "PushResult", "DeleteResult", "TaskVectorResult", "MergeResult", "EvalResult", "TLSOptions"]

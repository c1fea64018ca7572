"""gRPC server reflection, v1 and v1alpha, over descriptors that keep the proto comments.

The generated ``_pb2`` modules carry descriptors without source info, so a
generic client (``grpcurl describe``) would see fields but not what they
mean. ``make proto`` also writes ``deltahub/v1/descriptors.binpb`` (every
deltahub file and its imports, with comments); reflection resolves symbols
in a pool built from it (plus health's and reflection's own files) and
answers each file as it stands there, comments included (the library's
servicer re-serialises descriptors, which drops them).

grpcio-reflection implements ``grpc.reflection.v1alpha`` only. The v1
service is the same protocol under a new package (every message and field
number unchanged), so the same servicer answers it, registered under the v1
name with the v1alpha messages as its wire format.
"""

from __future__ import annotations

from importlib.resources import files

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
DESCRIPTORS = "descriptors.binpb"


def commented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """deltahub's files with their comments, and health's and reflection's (from their generated modules)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString((files("deltahub.v1") / DESCRIPTORS).read_bytes())
    out = {proto.name: proto for proto in fds.file}
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        out.setdefault(proto.name, proto)
    return out


class CommentedReflection(ReflectionServicer):
    def __init__(self, service_names, protos: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        pool = descriptor_pool.DescriptorPool()
        for proto in protos.values():  # in the set's order: dependencies first
            pool.Add(proto)
        super().__init__(service_names, pool=pool)
        self._bytes = {name: proto.SerializeToString() for name, proto in protos.items()}

    async def ServerReflectionInfo(self, request_iterator, context):
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                found = response.file_descriptor_response.file_descriptor_proto
                for i, blob in enumerate(found):
                    name = descriptor_pb2.FileDescriptorProto.FromString(blob).name
                    found[i] = self._bytes.get(name, blob)
            yield response


def enable_reflection(server: grpc.aio.Server, service_names) -> None:
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = CommentedReflection(names, commented_files())
    for service in (reflection.SERVICE_NAME, V1_SERVICE_NAME):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),))

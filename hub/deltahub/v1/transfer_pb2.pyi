from deltahub.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanPushRequest(_message.Message):
    __slots__ = ("artifact", "kind", "files", "base", "allow_code", "held")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CODE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    kind: _common_pb2.ArtifactKind
    files: _containers.RepeatedCompositeFieldContainer[_common_pb2.FileEntry]
    base: str
    allow_code: bool
    held: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, artifact: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ArtifactKind, str]] = ..., files: _Optional[_Iterable[_Union[_common_pb2.FileEntry, _Mapping]]] = ..., base: _Optional[str] = ..., allow_code: _Optional[bool] = ..., held: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanPushResponse(_message.Message):
    __slots__ = ("missing", "bytes_to_send", "session", "delta_bases")
    MISSING_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_SEND_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    DELTA_BASES_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedCompositeFieldContainer[UploadStatus]
    bytes_to_send: int
    session: str
    delta_bases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, missing: _Optional[_Iterable[_Union[UploadStatus, _Mapping]]] = ..., bytes_to_send: _Optional[int] = ..., session: _Optional[str] = ..., delta_bases: _Optional[_Iterable[str]] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("sha256", "size", "offset", "data", "session")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    offset: int
    data: bytes
    session: str
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., session: _Optional[str] = ...) -> None: ...

class UploadBlobResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: UploadStatus
    def __init__(self, status: _Optional[_Union[UploadStatus, _Mapping]] = ...) -> None: ...

class GetUploadStatusRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("sha256", "size", "offset", "complete")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    offset: int
    complete: bool
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., offset: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class DownloadBlobRequest(_message.Message):
    __slots__ = ("sha256", "offset", "length")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    length: int
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class PlanPullRequest(_message.Message):
    __slots__ = ("revision", "held")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    revision: str
    held: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revision: _Optional[str] = ..., held: _Optional[_Iterable[str]] = ...) -> None: ...

class EncodedBlob(_message.Message):
    __slots__ = ("sha256", "size", "container", "container_size", "bases")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_SIZE_FIELD_NUMBER: _ClassVar[int]
    BASES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    container: str
    container_size: int
    bases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., container: _Optional[str] = ..., container_size: _Optional[int] = ..., bases: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanPullResponse(_message.Message):
    __slots__ = ("encoded",)
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    encoded: _containers.RepeatedCompositeFieldContainer[EncodedBlob]
    def __init__(self, encoded: _Optional[_Iterable[_Union[EncodedBlob, _Mapping]]] = ...) -> None: ...

import datetime

from deltahub.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommitRevisionRequest(_message.Message):
    __slots__ = ("artifact", "kind", "files", "base", "card", "labels", "lineage", "ref", "expected_revision", "tags", "session", "allow_code", "encoded")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CODE_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    kind: _common_pb2.ArtifactKind
    files: _containers.RepeatedCompositeFieldContainer[_common_pb2.FileEntry]
    base: str
    card: _common_pb2.DomainCard
    labels: _containers.ScalarMap[str, str]
    lineage: _common_pb2.Lineage
    ref: str
    expected_revision: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    session: str
    allow_code: bool
    encoded: _containers.RepeatedCompositeFieldContainer[EncodedFile]
    def __init__(self, artifact: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ArtifactKind, str]] = ..., files: _Optional[_Iterable[_Union[_common_pb2.FileEntry, _Mapping]]] = ..., base: _Optional[str] = ..., card: _Optional[_Union[_common_pb2.DomainCard, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., lineage: _Optional[_Union[_common_pb2.Lineage, _Mapping]] = ..., ref: _Optional[str] = ..., expected_revision: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., session: _Optional[str] = ..., allow_code: _Optional[bool] = ..., encoded: _Optional[_Iterable[_Union[EncodedFile, _Mapping]]] = ...) -> None: ...

class EncodedFile(_message.Message):
    __slots__ = ("sha256", "container")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    container: str
    def __init__(self, sha256: _Optional[str] = ..., container: _Optional[str] = ...) -> None: ...

class CommitRevisionResponse(_message.Message):
    __slots__ = ("revision", "created")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    revision: _common_pb2.Revision
    created: bool
    def __init__(self, revision: _Optional[_Union[_common_pb2.Revision, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("namespace", "kind")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    kind: _common_pb2.ArtifactKind
    def __init__(self, namespace: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ArtifactKind, str]] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Artifact]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_common_pb2.Artifact, _Mapping]]] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    def __init__(self, artifact: _Optional[str] = ...) -> None: ...

class ListRevisionsRequest(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    def __init__(self, artifact: _Optional[str] = ...) -> None: ...

class ListRevisionsResponse(_message.Message):
    __slots__ = ("revisions",)
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Revision]
    def __init__(self, revisions: _Optional[_Iterable[_Union[_common_pb2.Revision, _Mapping]]] = ...) -> None: ...

class GetRevisionRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: str
    def __init__(self, spec: _Optional[str] = ...) -> None: ...

class UpdateRefRequest(_message.Message):
    __slots__ = ("artifact", "ref", "revision", "expected_revision")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    ref: str
    revision: str
    expected_revision: str
    def __init__(self, artifact: _Optional[str] = ..., ref: _Optional[str] = ..., revision: _Optional[str] = ..., expected_revision: _Optional[str] = ...) -> None: ...

class UpdateRefResponse(_message.Message):
    __slots__ = ("ref", "digest", "previous")
    REF_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    ref: str
    digest: str
    previous: str
    def __init__(self, ref: _Optional[str] = ..., digest: _Optional[str] = ..., previous: _Optional[str] = ...) -> None: ...

class DeleteRefRequest(_message.Message):
    __slots__ = ("artifact", "ref", "expected_revision")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    ref: str
    expected_revision: str
    def __init__(self, artifact: _Optional[str] = ..., ref: _Optional[str] = ..., expected_revision: _Optional[str] = ...) -> None: ...

class DeleteRefResponse(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class DeleteRevisionRequest(_message.Message):
    __slots__ = ("artifact", "revision")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    revision: str
    def __init__(self, artifact: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class DeleteArtifactRequest(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    def __init__(self, artifact: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted_revisions", "deleted_refs", "blobs_removed", "bytes_freed")
    DELETED_REVISIONS_FIELD_NUMBER: _ClassVar[int]
    DELETED_REFS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    deleted_revisions: _containers.RepeatedScalarFieldContainer[str]
    deleted_refs: _containers.RepeatedScalarFieldContainer[str]
    blobs_removed: int
    bytes_freed: int
    def __init__(self, deleted_revisions: _Optional[_Iterable[str]] = ..., deleted_refs: _Optional[_Iterable[str]] = ..., blobs_removed: _Optional[int] = ..., bytes_freed: _Optional[int] = ...) -> None: ...

class UpdateCardRequest(_message.Message):
    __slots__ = ("spec", "card", "labels", "replace_labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REPLACE_LABELS_FIELD_NUMBER: _ClassVar[int]
    spec: str
    card: _common_pb2.DomainCard
    labels: _containers.ScalarMap[str, str]
    replace_labels: bool
    def __init__(self, spec: _Optional[str] = ..., card: _Optional[_Union[_common_pb2.DomainCard, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., replace_labels: _Optional[bool] = ...) -> None: ...

class CreateTaskVectorRequest(_message.Message):
    __slots__ = ("finetuned", "base", "out", "rank", "energy", "card", "labels", "ref")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FINETUNED_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    finetuned: str
    base: str
    out: str
    rank: int
    energy: float
    card: _common_pb2.DomainCard
    labels: _containers.ScalarMap[str, str]
    ref: str
    def __init__(self, finetuned: _Optional[str] = ..., base: _Optional[str] = ..., out: _Optional[str] = ..., rank: _Optional[int] = ..., energy: _Optional[float] = ..., card: _Optional[_Union[_common_pb2.DomainCard, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., ref: _Optional[str] = ...) -> None: ...

class CreateTaskVectorResponse(_message.Message):
    __slots__ = ("revision", "relative_error", "created", "job")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    revision: _common_pb2.Revision
    relative_error: float
    created: bool
    job: str
    def __init__(self, revision: _Optional[_Union[_common_pb2.Revision, _Mapping]] = ..., relative_error: _Optional[float] = ..., created: _Optional[bool] = ..., job: _Optional[str] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ("partial_upload_max_age_s",)
    PARTIAL_UPLOAD_MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    partial_upload_max_age_s: float
    def __init__(self, partial_upload_max_age_s: _Optional[float] = ...) -> None: ...

class CollectGarbageResponse(_message.Message):
    __slots__ = ("blobs_removed", "bytes_freed", "partial_uploads_removed")
    BLOBS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_UPLOADS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    blobs_removed: int
    bytes_freed: int
    partial_uploads_removed: int
    def __init__(self, blobs_removed: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., partial_uploads_removed: _Optional[int] = ...) -> None: ...

class WatchRefsRequest(_message.Message):
    __slots__ = ("namespace", "artifact", "after")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    artifact: str
    after: int
    def __init__(self, namespace: _Optional[str] = ..., artifact: _Optional[str] = ..., after: _Optional[int] = ...) -> None: ...

class RefEvent(_message.Message):
    __slots__ = ("seq", "artifact", "ref", "revision", "at")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    artifact: str
    ref: str
    revision: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., artifact: _Optional[str] = ..., ref: _Optional[str] = ..., revision: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

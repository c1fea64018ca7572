from deltahub.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class SubmitJobRequest(_message.Message):
    __slots__ = ("trainer", "base", "datasets", "out", "config_json", "replay", "resume_from", "card", "labels", "idempotency_key", "max_attempts")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    trainer: str
    base: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    out: str
    config_json: str
    replay: _containers.RepeatedScalarFieldContainer[str]
    resume_from: str
    card: _common_pb2.DomainCard
    labels: _containers.ScalarMap[str, str]
    idempotency_key: str
    max_attempts: int
    def __init__(self, trainer: _Optional[str] = ..., base: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., out: _Optional[str] = ..., config_json: _Optional[str] = ..., replay: _Optional[_Iterable[str]] = ..., resume_from: _Optional[str] = ..., card: _Optional[_Union[_common_pb2.DomainCard, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., idempotency_key: _Optional[str] = ..., max_attempts: _Optional[int] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "trainer", "base", "datasets", "replay", "resume_from", "out", "config_json", "attempts", "max_attempts", "worker", "device", "step", "total_steps", "metrics_json", "checkpoint_step", "error_code", "error_message", "result_artifact", "result_digest", "cancel_requested", "created_at", "started_at", "finished_at", "idempotency_key", "checkpoint_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    trainer: str
    base: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    replay: _containers.RepeatedScalarFieldContainer[str]
    resume_from: str
    out: str
    config_json: str
    attempts: int
    max_attempts: int
    worker: str
    device: str
    step: int
    total_steps: int
    metrics_json: str
    checkpoint_step: int
    error_code: str
    error_message: str
    result_artifact: str
    result_digest: str
    cancel_requested: bool
    created_at: float
    started_at: float
    finished_at: float
    idempotency_key: str
    checkpoint_json: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., trainer: _Optional[str] = ..., base: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., replay: _Optional[_Iterable[str]] = ..., resume_from: _Optional[str] = ..., out: _Optional[str] = ..., config_json: _Optional[str] = ..., attempts: _Optional[int] = ..., max_attempts: _Optional[int] = ..., worker: _Optional[str] = ..., device: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., metrics_json: _Optional[str] = ..., checkpoint_step: _Optional[int] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., result_artifact: _Optional[str] = ..., result_digest: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., idempotency_key: _Optional[str] = ..., checkpoint_json: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("namespace", "limit")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    limit: int
    def __init__(self, namespace: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ListTrainersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerInfo(_message.Message):
    __slots__ = ("name", "title", "paper", "rank_adaptive", "defaults_json", "help_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PAPER_FIELD_NUMBER: _ClassVar[int]
    RANK_ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_JSON_FIELD_NUMBER: _ClassVar[int]
    HELP_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    paper: str
    rank_adaptive: bool
    defaults_json: str
    help_json: str
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., paper: _Optional[str] = ..., rank_adaptive: _Optional[bool] = ..., defaults_json: _Optional[str] = ..., help_json: _Optional[str] = ...) -> None: ...

class ListTrainersResponse(_message.Message):
    __slots__ = ("trainers",)
    TRAINERS_FIELD_NUMBER: _ClassVar[int]
    trainers: _containers.RepeatedCompositeFieldContainer[TrainerInfo]
    def __init__(self, trainers: _Optional[_Iterable[_Union[TrainerInfo, _Mapping]]] = ...) -> None: ...

class PinCheckpointRequest(_message.Message):
    __slots__ = ("job_id", "worker", "files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    worker: str
    files: _containers.RepeatedCompositeFieldContainer[_common_pb2.FileEntry]
    def __init__(self, job_id: _Optional[str] = ..., worker: _Optional[str] = ..., files: _Optional[_Iterable[_Union[_common_pb2.FileEntry, _Mapping]]] = ...) -> None: ...

class PinCheckpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseCheckpointRequest(_message.Message):
    __slots__ = ("job_id", "worker")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    worker: str
    def __init__(self, job_id: _Optional[str] = ..., worker: _Optional[str] = ...) -> None: ...

class ReleaseCheckpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

from deltahub.v1 import common_pb2 as _common_pb2
from deltahub.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    job: _jobs_pb2.Job
    created: bool
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

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

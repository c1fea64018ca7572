from deltahub.v1 import common_pb2 as _common_pb2
from deltahub.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MergeRequest(_message.Message):
    __slots__ = ("method", "inputs", "base", "out", "weights", "params_json", "form", "data", "rank", "energy", "device", "ref", "tags", "card", "labels", "idempotency_key", "dtype", "input_params_json", "max_error")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_FIELD_NUMBER: _ClassVar[int]
    method: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    base: str
    out: str
    weights: _containers.RepeatedScalarFieldContainer[float]
    params_json: str
    form: str
    data: str
    rank: int
    energy: float
    device: str
    ref: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    card: _common_pb2.DomainCard
    labels: _containers.ScalarMap[str, str]
    idempotency_key: str
    dtype: str
    input_params_json: str
    max_error: float
    def __init__(self, method: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., base: _Optional[str] = ..., out: _Optional[str] = ..., weights: _Optional[_Iterable[float]] = ..., params_json: _Optional[str] = ..., form: _Optional[str] = ..., data: _Optional[str] = ..., rank: _Optional[int] = ..., energy: _Optional[float] = ..., device: _Optional[str] = ..., ref: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., card: _Optional[_Union[_common_pb2.DomainCard, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., idempotency_key: _Optional[str] = ..., dtype: _Optional[str] = ..., input_params_json: _Optional[str] = ..., max_error: _Optional[float] = ...) -> None: ...

class StartMergeResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: _jobs_pb2.Job
    created: bool
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ("name", "title", "paper", "url", "source", "needs_data", "params_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PAPER_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_DATA_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    paper: str
    url: str
    source: str
    needs_data: bool
    params_json: str
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., paper: _Optional[str] = ..., url: _Optional[str] = ..., source: _Optional[str] = ..., needs_data: _Optional[bool] = ..., params_json: _Optional[str] = ...) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ("methods",)
    METHODS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    def __init__(self, methods: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("target", "data", "device")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    target: str
    data: str
    device: str
    def __init__(self, target: _Optional[str] = ..., data: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("target", "data", "metric", "score", "samples", "loss", "perplexity", "accuracy", "job")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    target: str
    data: str
    metric: str
    score: float
    samples: int
    loss: float
    perplexity: float
    accuracy: float
    job: str
    def __init__(self, target: _Optional[str] = ..., data: _Optional[str] = ..., metric: _Optional[str] = ..., score: _Optional[float] = ..., samples: _Optional[int] = ..., loss: _Optional[float] = ..., perplexity: _Optional[float] = ..., accuracy: _Optional[float] = ..., job: _Optional[str] = ...) -> None: ...

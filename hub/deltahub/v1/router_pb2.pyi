from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteOptions(_message.Message):
    __slots__ = ("k", "base", "namespace", "labels", "temperature", "min_score", "scoring")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    K_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    k: int
    base: str
    namespace: str
    labels: _containers.ScalarMap[str, str]
    temperature: float
    min_score: float
    scoring: str
    def __init__(self, k: _Optional[int] = ..., base: _Optional[str] = ..., namespace: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., temperature: _Optional[float] = ..., min_score: _Optional[float] = ..., scoring: _Optional[str] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("queries", "options")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedScalarFieldContainer[str]
    options: RouteOptions
    def __init__(self, queries: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[RouteOptions, _Mapping]] = ...) -> None: ...

class RoutedAdapter(_message.Message):
    __slots__ = ("artifact", "digest", "score", "weight")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    digest: str
    score: float
    weight: float
    def __init__(self, artifact: _Optional[str] = ..., digest: _Optional[str] = ..., score: _Optional[float] = ..., weight: _Optional[float] = ...) -> None: ...

class QueryRoute(_message.Message):
    __slots__ = ("query", "adapters", "serve_base", "reason", "best_score")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    SERVE_BASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    query: str
    adapters: _containers.RepeatedCompositeFieldContainer[RoutedAdapter]
    serve_base: bool
    reason: str
    best_score: float
    def __init__(self, query: _Optional[str] = ..., adapters: _Optional[_Iterable[_Union[RoutedAdapter, _Mapping]]] = ..., serve_base: _Optional[bool] = ..., reason: _Optional[str] = ..., best_score: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("routes", "embedder", "scoring", "candidates", "unrouted_count", "unrouted", "unrouted_reason")
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_REASON_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[QueryRoute]
    embedder: str
    scoring: str
    candidates: int
    unrouted_count: int
    unrouted: _containers.RepeatedScalarFieldContainer[str]
    unrouted_reason: str
    def __init__(self, routes: _Optional[_Iterable[_Union[QueryRoute, _Mapping]]] = ..., embedder: _Optional[str] = ..., scoring: _Optional[str] = ..., candidates: _Optional[int] = ..., unrouted_count: _Optional[int] = ..., unrouted: _Optional[_Iterable[str]] = ..., unrouted_reason: _Optional[str] = ...) -> None: ...

class AssembleRequest(_message.Message):
    __slots__ = ("query", "adapters", "weights", "options", "method", "form", "params_json", "rank", "energy", "out")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    query: str
    adapters: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[float]
    options: RouteOptions
    method: str
    form: str
    params_json: str
    rank: int
    energy: float
    out: str
    def __init__(self, query: _Optional[str] = ..., adapters: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[float]] = ..., options: _Optional[_Union[RouteOptions, _Mapping]] = ..., method: _Optional[str] = ..., form: _Optional[str] = ..., params_json: _Optional[str] = ..., rank: _Optional[int] = ..., energy: _Optional[float] = ..., out: _Optional[str] = ...) -> None: ...

class AssembleResponse(_message.Message):
    __slots__ = ("artifact", "digest", "cached", "recipe_hash", "adapters", "method", "form", "base", "serve_base", "reason", "job")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    RECIPE_HASH_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    SERVE_BASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    artifact: str
    digest: str
    cached: bool
    recipe_hash: str
    adapters: _containers.RepeatedCompositeFieldContainer[RoutedAdapter]
    method: str
    form: str
    base: str
    serve_base: bool
    reason: str
    job: str
    def __init__(self, artifact: _Optional[str] = ..., digest: _Optional[str] = ..., cached: _Optional[bool] = ..., recipe_hash: _Optional[str] = ..., adapters: _Optional[_Iterable[_Union[RoutedAdapter, _Mapping]]] = ..., method: _Optional[str] = ..., form: _Optional[str] = ..., base: _Optional[str] = ..., serve_base: _Optional[bool] = ..., reason: _Optional[str] = ..., job: _Optional[str] = ...) -> None: ...

class GetRouterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RouterStatus(_message.Message):
    __slots__ = ("embedder", "embedders", "ready", "dim", "indexed", "unrouted", "search", "error")
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDERS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    embedder: str
    embedders: _containers.RepeatedScalarFieldContainer[str]
    ready: bool
    dim: int
    indexed: int
    unrouted: int
    search: str
    error: str
    def __init__(self, embedder: _Optional[str] = ..., embedders: _Optional[_Iterable[str]] = ..., ready: _Optional[bool] = ..., dim: _Optional[int] = ..., indexed: _Optional[int] = ..., unrouted: _Optional[int] = ..., search: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

"""What the SDK's verbs return where no core type fits: a push, a task vector, a merge, an evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deltahub.artifacts import Revision


@dataclass(frozen=True)
class PushResult:
    revision: Revision
    created: bool
    blobs_sent: int
    bytes_sent: int


@dataclass(frozen=True)
class TaskVectorResult:
    revision: Revision
    created: bool
    relative_error: float
    job: str = ""                 # the task_vector job that extracted it


@dataclass(frozen=True)
class MergeResult:
    revision: Revision
    cached: bool
    recipe_hash: str
    metrics: dict[str, Any] = field(default_factory=dict)
    job: str = ""                 # the merge job that built (or found) it


@dataclass(frozen=True)
class EvalResult:
    target: str
    data: str
    metric: str
    score: float
    samples: int
    loss: float | None = None
    perplexity: float | None = None
    accuracy: float | None = None
    job: str = ""

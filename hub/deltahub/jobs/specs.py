"""What each kind of job asks for, as it is kept in the job's ``spec``.

Every name is resolved to ``namespace/name@digest`` before a job is queued,
so a job works on exactly the revisions that existed when it was asked,
whatever refs do afterwards; access was checked then, for the caller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


class _Spec:
    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]):
        known = {f.name: f for f in fields(cls)}
        # annotations are strings here (postponed evaluation): tuple fields come back from JSON lists
        return cls(**{k: tuple(v) if str(known[k].type).startswith("tuple") else v
                      for k, v in doc.items() if k in known})


@dataclass(frozen=True)
class TrainSpec(_Spec):
    trainer: str
    base: str                       # resolved: namespace/name@digest
    datasets: tuple[str, ...]       # resolved revision specs
    out: str                        # namespace/name of the adapter to commit
    config: dict[str, Any] = field(default_factory=dict)
    replay: tuple[str, ...] = ()    # resolved dataset specs mixed in at config.replay_fraction
    resume_from: str = ""           # resolved adapter spec to continue, or ""
    card: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeSpec(_Spec):
    """A ``merge`` (or ``assemble``) job: the recipe, and where its result goes."""

    recipe: dict[str, Any]          # deltahub.merging.recipe.Recipe.to_dict()
    hash: str                       # the recipe's hash: the cache key and the flight
    out: str
    ref: str = "main"
    tags: tuple[str, ...] = ()
    card: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created_by: str = ""
    device: str = "auto"
    # the largest relative error one parameter of the result may have (not part of the recipe: it decides
    # whether a result is accepted, not what it is)
    max_error: float = 0.01


@dataclass(frozen=True)
class EvaluateSpec(_Spec):
    target: str                     # a model, adapter or task vector, resolved
    data: str                       # a dataset, resolved
    base: str                       # the model the target applies to (the target itself for a model)
    device: str = "auto"


@dataclass(frozen=True)
class TaskVectorSpec(_Spec):
    finetuned: str
    base: str
    out: str
    rank: int | None = None
    energy: float | None = None
    card: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ref: str = "main"
    created_by: str = ""

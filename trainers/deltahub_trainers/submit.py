"""Turning a training request into a :class:`TrainSpec`: everything is checked before a job is queued.

Names are resolved to revision digests here, so a job trains on exactly the
revisions that existed when it was submitted, whatever refs do afterwards.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from deltahub.artifacts import DomainCard, Kind
from deltahub.errors import InvalidInputError, LimitExceededError, PreconditionError
from deltahub.formats import patterns
from deltahub.limits import TrainingLimits
from deltahub.formats.dataset import read_rows
from deltahub.jobs.specs import TrainSpec
from deltahub.names import ArtifactName
from deltahub.store import HubStore
from deltahub_trainers import make_trainer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_limits(config, limits: TrainingLimits, rows: Callable[[], int]) -> None:
    """Every knob within the hub's bounds, and the steps the epochs come to as well."""
    bounds = [("steps", config.steps, limits.max_steps, "--max-train-steps"),
              ("epochs", config.epochs, limits.max_epochs, "--max-train-epochs"),
              ("batch_size", config.batch_size, limits.max_batch_size, "--max-train-batch-size"),
              ("max_length", config.max_length, limits.max_length, "--max-train-length"),
              ("lr", config.lr, limits.max_lr, "--max-train-lr")]
    bounds += [(f.name, getattr(config, f.name), limits.max_rank, "--max-train-rank")
               for f in dataclasses.fields(config) if f.name == "r" or f.name.endswith("_r")]
    for name, value, high, flag in bounds:
        if value > high:
            raise LimitExceededError(f"config {name}={value} exceeds this hub's limit of {high} ({flag})")
    if not config.steps:
        total = config.total_steps(rows())
        if total > limits.max_steps:
            raise LimitExceededError(f"epochs={config.epochs:g} come to {total} steps on this data, over this hub's "
                                     f"limit of {limits.max_steps} (--max-train-steps): lower epochs or set steps")


def resolve_targets(config: dict, module_names: set[str]) -> dict:
    """A ``target_modules`` pattern becomes the base's module names it matches (RE2, so no backtracking),
    and the job carries that list: the worker's peft never runs a client's regular expression."""
    targets = config.get("target_modules")
    if isinstance(targets, str) and targets != "all-linear":
        names = patterns.matching(targets, sorted(module_names), "config target_modules")
        if not names:
            raise InvalidInputError(f"config target_modules {targets!r} matches no module of the base model")
        return {**config, "target_modules": names}
    if isinstance(targets, list):
        unknown = [t for t in targets if not any(m == t or m.endswith("." + t) for m in module_names)]
        if unknown:
            raise InvalidInputError(f"config target_modules {unknown[:5]} match no module of the base model")
    return config


@dataclasses.dataclass
class TrainRequest:
    """An adapter to train: ``trainer`` on ``datasets`` over ``base``, stored as ``out``; ``config`` is the
    trainer's knobs (its defaults for the rest), ``replay`` data mixed in against forgetting, ``resume_from``
    an adapter of the same base to continue."""

    trainer: str
    base: str
    datasets: list[str]
    out: str
    config: dict = dataclasses.field(default_factory=dict)
    replay: list[str] = dataclasses.field(default_factory=list)
    resume_from: str = ""
    card: DomainCard = dataclasses.field(default_factory=DomainCard)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


def build_spec(store: HubStore, req: TrainRequest, limits: TrainingLimits | None = None) -> TrainSpec:
    config = dict(req.config)
    t = make_trainer(req.trainer, config)  # unknown trainer (lists the known ones), bad config values
    name = str(ArtifactName.parse(req.out))
    existing = store.catalog.artifact_kind(name)
    if existing is not None and existing is not Kind.ADAPTER:
        raise PreconditionError(f"{name} holds {existing.value} revisions; a trainer writes adapters")
    if not req.base:
        raise InvalidInputError("a training job needs a base model (--base namespace/name[@ref])")
    base_rev = store.resolve_base(req.base)
    if not any(f.path in TOKENIZER_FILES for f in base_rev.files):
        raise PreconditionError(f"base {base_rev.spec} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
                                "push the model folder with its tokenizer")
    if not req.datasets:
        raise InvalidInputError("a training job needs at least one dataset (--data namespace/name[@ref])")
    data = [store.resolve_as(d, Kind.DATASET, "dataset") for d in req.datasets]
    check_limits(t.config, limits or TrainingLimits(),
                 lambda: sum(len(read_rows(store.local_files(rev))) for rev in data))
    config = resolve_targets(config, store.base_info(base_rev).module_names)
    replay_specs = [store.resolve_as(d, Kind.DATASET, "replay dataset").spec for d in req.replay]
    if t.config.replay_fraction and not replay_specs:
        raise InvalidInputError("config replay_fraction > 0 needs replay datasets (--replay namespace/name)")
    if replay_specs and not t.config.replay_fraction:
        raise InvalidInputError("replay datasets were given but config replay_fraction is 0")
    resumed = ""
    if req.resume_from:
        if not t.resumable_from_adapter:
            raise InvalidInputError(f"trainer {req.trainer} cannot continue an adapter (the lora trainer can); "
                                    "rank-adaptive trainers start from their own initialisation")
        rev = store.resolve_as(req.resume_from, Kind.ADAPTER, "resume_from")
        if rev.base != base_rev.spec:
            raise PreconditionError(f"resume_from {rev.spec} applies to base {rev.base or 'none'}, "
                                    f"not to {base_rev.spec}")
        resumed = rev.spec
    phases = getattr(t.config, "phases", None)
    if phases is not None:  # AdaLoRA: the budgeting phase must fit in the steps (which may follow from the rows)
        rows = t.config.steps or sum(len(read_rows(store.local_files(rev))) for rev in data)
        phases(t.config.total_steps(rows))
    return TrainSpec(trainer=req.trainer, base=base_rev.spec, datasets=tuple(rev.spec for rev in data), out=name,
                     config=config, replay=tuple(replay_specs), resume_from=resumed,
                     card=req.card.to_dict(), labels=dict(req.labels))

"""Turning a training request into a :class:`JobSpec`: everything is checked before a job is queued.

Names are resolved to revision digests here, so a job trains on exactly the
revisions that existed when it was submitted, whatever refs do afterwards.
"""

from __future__ import annotations

from deltahub.artifacts import DomainCard, Kind
from deltahub.errors import InvalidInputError, PreconditionError
from deltahub.formats.dataset import read_rows
from deltahub.jobs.model import JobSpec
from deltahub.names import ArtifactName
from deltahub.store import HubStore
from deltahub_trainers import make_trainer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def build_spec(store: HubStore, *, trainer: str, base: str, datasets: list[str], out: str,
               config: dict | None = None, replay: list[str] | None = None, resume_from: str = "",
               card: DomainCard | None = None, labels: dict[str, str] | None = None,
               idempotency_key: str = "") -> JobSpec:
    config = dict(config or {})
    t = make_trainer(trainer, config)  # unknown trainer (lists the known ones), bad config values
    name = str(ArtifactName.parse(out))
    existing = store.catalog.artifact_kind(name)
    if existing is not None and existing is not Kind.ADAPTER:
        raise PreconditionError(f"{name} holds {existing.value} revisions; a trainer writes adapters")
    if not base:
        raise InvalidInputError("a training job needs a base model (--base namespace/name[@ref])")
    base_rev = store.resolve_base(base)
    if not any(f.path in TOKENIZER_FILES for f in base_rev.files):
        raise PreconditionError(f"base {base_rev.spec} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
                                "push the model folder with its tokenizer")
    if not datasets:
        raise InvalidInputError("a training job needs at least one dataset (--data namespace/name[@ref])")
    data = [store.resolve_as(d, Kind.DATASET, "dataset") for d in datasets]
    replay_specs = [store.resolve_as(d, Kind.DATASET, "replay dataset").spec for d in (replay or [])]
    if t.config.replay_fraction and not replay_specs:
        raise InvalidInputError("config replay_fraction > 0 needs replay datasets (--replay namespace/name)")
    if replay_specs and not t.config.replay_fraction:
        raise InvalidInputError("replay datasets were given but config replay_fraction is 0")
    resumed = ""
    if resume_from:
        if not t.resumable_from_adapter:
            raise InvalidInputError(f"trainer {trainer} cannot continue an adapter (the lora trainer can); "
                                    "rank-adaptive trainers start from their own initialisation")
        rev = store.resolve_as(resume_from, Kind.ADAPTER, "resume_from")
        if rev.base != base_rev.spec:
            raise PreconditionError(f"resume_from {rev.spec} applies to base {rev.base or 'none'}, "
                                    f"not to {base_rev.spec}")
        resumed = rev.spec
    phases = getattr(t.config, "phases", None)
    if phases is not None:  # AdaLoRA: the budgeting phase must fit in the steps (which may follow from the rows)
        rows = t.config.steps or sum(len(read_rows(store.local_files(rev))) for rev in data)
        phases(t.config.total_steps(rows))
    return JobSpec(trainer=trainer, base=base_rev.spec, datasets=tuple(rev.spec for rev in data), out=name, config=config,
                   replay=tuple(replay_specs), resume_from=resumed, card=(card or DomainCard()).to_dict(),
                   labels=dict(labels or {}), idempotency_key=idempotency_key)

"""Readers and validators for what the hub stores. No pickle, ever.

Two steps, in this order:

* :func:`check_files` and :func:`required_files` check names, paths and the
  files a kind must have; they need no bytes, so the hub runs them before
  an upload starts and again at commit;
* :func:`validate` reads the files' contents (headers, shapes against the
  base, values) and raises :class:`~deltahub.errors.InvalidInputError`
  naming the first problem, or returns a short summary.
"""

from __future__ import annotations

from pathlib import Path

from deltahub.artifacts import Kind
from deltahub.errors import InvalidInputError
from deltahub.formats.adapter import validate_adapter
from deltahub.formats.dataset import validate_dataset
from deltahub.formats.mixture import MIXTURE_FILE, required_mixture_files, validate_mixture
from deltahub.formats.model import BaseModelInfo, validate_model
from deltahub.formats.rules import check_code, check_contents, check_files, check_path
from deltahub.formats.task_vector import validate_task_vector
from deltahub.limits import InputLimits

__all__ = ["BaseModelInfo", "validate", "check_code", "check_contents", "check_files", "check_path", "validate_model",
           "required_files"]

REQUIRED_FILES = {
    Kind.MODEL: ("config.json",),
    Kind.ADAPTER: ("adapter_config.json", "adapter_model.safetensors"),
    Kind.TASK_VECTOR: (),
    Kind.DATASET: (),
}


def required_files(kind: Kind, paths: set[str]) -> None:
    """The cheap check made before upload: files every revision of this kind must have."""
    if kind is Kind.ADAPTER and MIXTURE_FILE in paths:
        return required_mixture_files(paths)
    for required in REQUIRED_FILES[kind]:
        if required not in paths:
            raise InvalidInputError(f"{kind.value} is missing required file {required}")
    if kind in (Kind.MODEL, Kind.TASK_VECTOR) and not any(p.endswith(".safetensors") for p in paths):
        raise InvalidInputError(f"{kind.value} has no *.safetensors weight file")
    if kind is Kind.DATASET and not any(p.endswith(".jsonl") for p in paths):
        raise InvalidInputError("dataset has no *.jsonl file")


def validate(kind: Kind, files: dict[str, Path], base: BaseModelInfo | None,
             limits: InputLimits | None = None) -> dict:
    """Contents only: the caller has run :func:`check_files` and :func:`required_files`."""
    limits = limits or InputLimits()
    if kind is Kind.MODEL:
        info = validate_model(files, limits=limits)
        return {"parameters": len(info.shapes)}
    if kind is Kind.DATASET:
        return validate_dataset(files, limits)
    if base is None:
        raise InvalidInputError(f"a {kind.value} needs a base model")
    if kind is Kind.ADAPTER and MIXTURE_FILE in files:
        return validate_mixture(files, base)
    if kind is Kind.ADAPTER:
        summary = validate_adapter(files, base, limits=limits)
        return {"modules": len(summary["ranks"]), "total_rank": sum(summary["ranks"].values())}
    return validate_task_vector(files, base, limits=limits)

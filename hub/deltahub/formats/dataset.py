"""Datasets: folders of JSONL files whose rows have a string ``text`` (and ``label`` for classification)."""

from __future__ import annotations

import json
from pathlib import Path

from deltahub import jsondoc
from deltahub.errors import InvalidInputError, LimitExceededError
from deltahub.limits import InputLimits


def read_rows(files: dict[str, Path], limit: int | None = None) -> list[dict]:
    """The rows of a (validated) dataset revision, shards in path order, at most ``limit``."""
    rows: list[dict] = []
    for path in sorted(p for p in files if p.endswith(".jsonl")):
        with open(files[path], "rb") as fh:
            for raw in fh:
                if raw.strip():
                    rows.append(json.loads(raw))
                    if limit is not None and len(rows) >= limit:
                        return rows
    return rows


MAX_LABEL_CHARS = 256


def validate_dataset(files: dict[str, Path], limits: InputLimits | None = None) -> dict:
    limits = limits or InputLimits()
    shards = sorted(p for p in files if p.endswith(".jsonl"))
    rows = 0
    labels: set = set()
    for path in shards:
        with open(files[path], "rb") as fh:
            lineno = 0
            # readline with a bound: one endless line must not be read into memory whole
            while raw := fh.readline(limits.max_dataset_line_bytes + 1):
                lineno += 1
                if len(raw) > limits.max_dataset_line_bytes:
                    raise LimitExceededError(
                        f"{path}:{lineno}: a row longer than {limits.max_dataset_line_bytes} bytes "
                        "(--max-dataset-line-bytes); split it"
                    )
                if not raw.strip():
                    continue
                row = jsondoc.loads(raw, f"{path}:{lineno}", max_depth=limits.max_json_depth)
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise InvalidInputError(f"{path}:{lineno}: a row must be an object with a string 'text' field")
                if "label" in row:
                    label = row["label"]
                    if not isinstance(label, (str, int)) or isinstance(label, bool):
                        raise InvalidInputError(f"{path}:{lineno}: 'label' must be a string or an integer")
                    if isinstance(label, str) and len(label) > MAX_LABEL_CHARS or (
                            isinstance(label, int) and not -2**63 <= label < 2**63):
                        raise InvalidInputError(
                            f"{path}:{lineno}: 'label' must be a string of at most {MAX_LABEL_CHARS} characters "
                            "or a 64-bit integer")
                    labels.add(row["label"])
                rows += 1
    if rows == 0:
        raise InvalidInputError("dataset has no rows")
    return {"rows": rows, "labels": len(labels)}

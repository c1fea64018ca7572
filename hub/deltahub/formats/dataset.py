"""Datasets: folders of JSONL files whose rows have a string ``text`` (and ``label`` for classification)."""

from __future__ import annotations

import json
from pathlib import Path

from deltahub.errors import InvalidInputError


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


def validate_dataset(files: dict[str, Path]) -> dict:
    shards = sorted(p for p in files if p.endswith(".jsonl"))
    rows = 0
    labels: set = set()
    for path in shards:
        with open(files[path], "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise InvalidInputError(f"{path}:{lineno}: not valid JSON ({err})") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise InvalidInputError(f"{path}:{lineno}: a row must be an object with a string 'text' field")
                if "label" in row:
                    if not isinstance(row["label"], (str, int)) or isinstance(row["label"], bool):
                        raise InvalidInputError(f"{path}:{lineno}: 'label' must be a string or an integer")
                    labels.add(row["label"])
                rows += 1
    if rows == 0:
        raise InvalidInputError("dataset has no rows")
    return {"rows": rows, "labels": len(labels)}

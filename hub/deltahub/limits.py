"""The hub's limits on untrusted input and on what one client may hold, each with a default and a flag.

Every limit is a field declared with :func:`limit`: its default, the
``deltahub serve`` flag that changes it (generated from these declarations)
and its help. Refusals name the value, the limit and the flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

from deltahub.errors import LimitExceededError


def limit(default: Any, flag: str, help: str) -> Any:  # noqa: A002 - click's spelling
    return field(default=default, metadata={"flag": flag, "help": help})


@dataclass
class StreamLimits:
    max_streams_per_principal: int = limit(64, "--max-streams-per-principal",
                                           "Uploads, downloads and watches one token may hold open at once.")
    stream_idle_s: float = limit(60.0, "--stream-idle-timeout", "Seconds a stream may go without a message.")
    min_upload_bytes_per_s: int = limit(16 << 10, "--min-upload-rate",
                                        "Bytes/s an upload must average after its grace period (0: no floor).")
    upload_grace_s: float = limit(30.0, "--upload-grace", "Seconds before the upload rate floor applies.")
    max_watch_s: float = limit(24 * 3600.0, "--max-watch", "Seconds a watch stays open; clients watch again.")
    max_concurrent_rpcs: int = limit(2000, "--max-concurrent-rpcs",
                                     "Calls in flight at once; more are answered RESOURCE_EXHAUSTED.")


@dataclass
class UploadLimits:
    max_partial_uploads: int = limit(64, "--max-partial-uploads", "Blobs one token may have half-uploaded at once.")
    max_partial_bytes: int = limit(64 << 30, "--max-partial-bytes", "Declared bytes of those partial uploads.")
    partial_ttl_s: float = limit(6 * 3600.0, "--partial-upload-ttl",
                                 "Seconds an untouched partial upload or push session is kept.")
    sweep_every_s: float = limit(600.0, "--upload-sweep-every", "Seconds between sweeps of expired uploads.")


@dataclass
class InputLimits:
    max_json_depth: int = limit(64, "--max-json-depth",
                                "Nesting of any JSON a client sends (configs, headers, rows, lineage, params).")
    max_card_samples: int = limit(256, "--max-card-samples", "Sample texts in a domain card (routing embeds each).")
    max_card_bytes: int = limit(256 << 10, "--max-card-bytes", "UTF-8 bytes of a card's description and samples.")
    max_dataset_line_bytes: int = limit(1 << 20, "--max-dataset-line-bytes", "Bytes of one JSONL dataset row.")
    max_safetensors_header_bytes: int = limit(100_000_000, "--max-safetensors-header-bytes",
                                              "Bytes of one safetensors header (the safetensors library's own cap).")
    max_lineage_bytes: int = limit(1 << 20, "--max-lineage-bytes", "Bytes of a revision's lineage as JSON.")
    max_labels: int = limit(64, "--max-labels", "Labels on one revision (keys and values up to 256 characters).")
    max_held_blobs: int = limit(4096, "--max-held-blobs",
                                "Blobs a client may name as held when it pushes or pulls deltas (--base-dir).")


@dataclass
class TrainingLimits:
    """Upper bounds for training knobs: one job must not hold a worker, or the hub's memory, for ever."""

    max_steps: int = limit(100_000, "--max-train-steps", "Optimizer steps of a job (also what epochs come to).")
    max_epochs: float = limit(100.0, "--max-train-epochs", "Epochs of a job.")
    max_batch_size: int = limit(256, "--max-train-batch-size", "Rows per step.")
    max_length: int = limit(4096, "--max-train-length", "Tokens per row.")
    max_rank: int = limit(512, "--max-train-rank", "Adapter rank (r, init_r, target_r, max_r).")
    max_lr: float = limit(1.0, "--max-train-lr", "Peak learning rate.")


@dataclass
class JobLimits:
    """What the hub keeps of finished jobs, and how often one may be tried."""

    keep_finished: int = limit(10_000, "--keep-jobs", "Finished jobs kept for listing (the newest; older ones go).")
    keep_days: float = limit(30.0, "--keep-jobs-days", "Days a finished job is kept.")
    max_attempts: int = limit(20, "--max-job-attempts", "Attempts a client may ask for (max_attempts).")


@dataclass
class DeltaLimits:
    """What storing files as deltas against their base may take (deltahub.compaction)."""

    delta_workers: int = limit(0, "--delta-workers", "Threads encoding and decoding deltas (0: every core).")
    rebuilt_cache_bytes: int = limit(20 << 30, "--rebuilt-cache-bytes",
                                     "Files rebuilt from their deltas kept at most in --data-dir (least recent go).")
    delta_copy_grace_s: float = limit(600.0, "--delta-copy-grace",
                                      "Seconds a file stored as a delta keeps its copy as itself (for open readers).")
    compact_every_s: float = limit(300.0, "--compact-every",
                                   "Seconds between passes looking for files to store as deltas (also after commits).")
    max_delta_growth: float = limit(2.0, "--max-delta-growth",
                                    "Times the bytes of the base files it needs that a file pushed as a delta may "
                                    "rebuild to (plus 1 MiB), so a small container cannot make the hub write more.")

    @property
    def workers(self) -> int | None:
        return self.delta_workers or None


GROUPS = (StreamLimits, UploadLimits, InputLimits, TrainingLimits, JobLimits, DeltaLimits)


def declared() -> Iterator[tuple[type, dataclasses.Field]]:
    """(group, field) of every limit, for the command line and the docs."""
    for group in GROUPS:
        for f in dataclasses.fields(group):
            yield group, f


def from_flags(values: dict[str, Any]) -> dict[type, Any]:
    """Each group built from values keyed by field name (missing ones keep their defaults)."""
    return {group: group(**{f.name: values[f.name] for f in dataclasses.fields(group)
                            if values.get(f.name) is not None}) for group in GROUPS}


def check_card(card, limits: InputLimits) -> None:
    """A domain card within the sample and byte limits (routing embeds every sample)."""
    if len(card.samples) > limits.max_card_samples:
        raise LimitExceededError(
            f"domain card has {len(card.samples)} samples; the limit is {limits.max_card_samples} "
            "(--max-card-samples): keep the most typical ones"
        )
    size = len(card.description.encode()) + sum(len(s.encode()) for s in card.samples)
    if size > limits.max_card_bytes:
        raise LimitExceededError(
            f"domain card holds {size} bytes of text; the limit is {limits.max_card_bytes} (--max-card-bytes)"
        )


def check_annotations(labels: dict, lineage_json: int, limits: InputLimits) -> None:
    """Labels and lineage within their limits; ``lineage_json`` is the lineage's size as JSON."""
    if len(labels) > limits.max_labels:
        raise LimitExceededError(f"{len(labels)} labels; the limit is {limits.max_labels} (--max-labels)")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 256 or len(value) > 256:
            raise LimitExceededError(f"label {str(key)[:40]!r}: keys and values are strings of at most 256 characters")
    if lineage_json > limits.max_lineage_bytes:
        raise LimitExceededError(
            f"lineage of {lineage_json} bytes as JSON exceeds the limit of {limits.max_lineage_bytes} bytes "
            "(--max-lineage-bytes)"
        )

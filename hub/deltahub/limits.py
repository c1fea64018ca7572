"""The hub's limits on untrusted input and on what one client may hold, each with a default and a flag.

Refusals name the limit, the value and the flag that raises it
(:class:`~deltahub.errors.LimitExceededError`, RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

from dataclasses import dataclass

from deltahub.errors import LimitExceededError


@dataclass
class UploadLimits:
    max_partial_uploads: int = 64               # blobs one principal may have half-uploaded at once
    max_partial_bytes: int = 64 << 30           # their declared sizes, added up
    partial_ttl_s: float = 6 * 3600.0           # a partial upload or push session untouched this long is removed
    sweep_every_s: float = 600.0                # how often the server collects expired uploads


@dataclass
class StreamLimits:
    max_streams_per_principal: int = 64   # uploads, downloads and watches open at once, per token
    stream_idle_s: float = 60.0           # a stream with no message for this long is ended
    min_upload_bytes_per_s: int = 16 << 10  # averaged from the start of an upload, after the grace period
    upload_grace_s: float = 30.0
    max_watch_s: float = 24 * 3600.0      # a watch is re-opened by the client after this
    max_concurrent_rpcs: int = 2000       # the server answers RESOURCE_EXHAUSTED past this




@dataclass
class InputLimits:
    max_json_depth: int = 64                    # any JSON a client sends (configs, headers, lineage, params, rows)
    max_card_samples: int = 256                 # sample texts in a domain card (routing cost grows with them)
    max_card_bytes: int = 256 << 10             # a card's description and samples, UTF-8
    max_dataset_line_bytes: int = 1 << 20       # one JSONL row
    max_safetensors_header_bytes: int = 100_000_000  # what the safetensors library itself reads at most
    max_lineage_bytes: int = 1 << 20            # parents, recipe, training config and metrics, as JSON
    max_labels: int = 64                        # labels on a revision (each key and value at most 256 characters)


@dataclass
class TrainingLimits:
    """Upper bounds for training knobs: one job must not hold a worker (or the hub's memory) for ever."""

    max_steps: int = 100_000                    # also bounds epochs x batches when steps is 0
    max_epochs: float = 100.0
    max_batch_size: int = 256
    max_length: int = 4096
    max_rank: int = 512                         # r, init_r, target_r, max_r
    max_lr: float = 1.0


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
        raise LimitExceededError(f"{len(labels)} labels; the limit is {limits.max_labels}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 256 or len(value) > 256:
            raise LimitExceededError(f"label {str(key)[:40]!r}: keys and values are strings of at most 256 characters")
    if lineage_json > limits.max_lineage_bytes:
        raise LimitExceededError(
            f"lineage of {lineage_json} bytes as JSON exceeds the limit of {limits.max_lineage_bytes} bytes"
        )

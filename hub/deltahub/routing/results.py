"""What routing and assembly answer: plain dataclasses, shared by the core and the SDK.

Nothing here imports numpy or torch, so the command line stays quick to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Routed:
    """One adapter chosen for a query."""

    artifact: str
    digest: str
    score: float    # cosine similarity to the query (0 for an explicit adapter list)
    weight: float   # softmax over the returned scores; sums to 1 per query

    @property
    def spec(self) -> str:
        return f"{self.artifact}@{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "digest": self.digest, "score": self.score, "weight": self.weight}


@dataclass(frozen=True)
class QueryRoute:
    query: str
    adapters: tuple[Routed, ...]
    best_score: float | None = None  # the best score seen, even when below the minimum
    reason: str = ""                 # why no adapter is returned (serve the base)

    @property
    def serve_base(self) -> bool:
        return not self.adapters

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "serve_base": self.serve_base, "reason": self.reason,
                "best_score": self.best_score, "adapters": [a.to_dict() for a in self.adapters]}


@dataclass(frozen=True)
class RouteAnswer:
    routes: tuple[QueryRoute, ...]
    embedder: str
    scoring: str
    candidates: int                 # indexed adapters that passed the filters
    unrouted_count: int = 0         # adapters that passed the filters but have no card
    unrouted: tuple[str, ...] = ()  # the first few of them
    unrouted_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "scoring": self.scoring, "candidates": self.candidates,
                "unrouted_count": self.unrouted_count, "unrouted": list(self.unrouted),
                "unrouted_reason": self.unrouted_reason, "routes": [r.to_dict() for r in self.routes]}


@dataclass(frozen=True)
class Assembly:
    adapters: tuple[Routed, ...]
    method: str
    form: str
    base: str
    artifact: str = ""
    digest: str = ""
    cached: bool = False        # built before: returned without merging
    recipe_hash: str = ""
    reason: str = ""            # set when nothing was merged: serve the base

    @property
    def serve_base(self) -> bool:
        return not self.digest

    @property
    def spec(self) -> str:
        """The revision to load: the merged one, or the base when no adapter fits."""
        return f"{self.artifact}@{self.digest}" if self.digest else self.base

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "digest": self.digest, "spec": self.spec, "cached": self.cached,
                "recipe_hash": self.recipe_hash, "method": self.method, "form": self.form, "base": self.base,
                "serve_base": self.serve_base, "reason": self.reason, "adapters": [a.to_dict() for a in self.adapters]}

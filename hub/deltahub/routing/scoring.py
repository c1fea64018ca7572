"""Router scoring: pure functions on unit-norm embedding matrices (numpy).

Every vector here is L2-normalised, so a dot product is a cosine.

Two ways to score an adapter against a query, both from the adapter's card
(its description counts as one more sample, as LoraRetriever does):

- ``centroid`` (LoraRetriever, Zhao et al. 2024, the baseline): the adapter
  is the normalised mean of its sample embeddings; score = cos(query, mean).
- ``samples`` (ours): score = mean of the ``top_m`` best sample cosines.
  A card whose samples cover several sub-topics is matched by the sub-topic
  the query is about instead of by their blurred mean. The choice of
  ``top_m`` (2) comes from ``bench/router.py``: 1 (nearest sample) is the
  noisiest, the full mean is the centroid again.

Weights over the chosen top-k are ``softmax(score / temperature)``. The
default temperature 0.05 is a choice: cosines of one encoder to related
adapters differ by a few hundredths, and at temperature 1 every weight
would be near 1/k whatever the scores.
"""

from __future__ import annotations

import numpy as np

SCORINGS = ("samples", "centroid")
DEFAULT_SCORING = "samples"
DEFAULT_TEMPERATURE = 0.05
DEFAULT_TOP_M = 2


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def centroid(samples: np.ndarray) -> np.ndarray:
    """LoraRetriever's adapter embedding: the normalised mean of its sample embeddings.

    Args:
        samples: ``(n, d)`` unit rows, n >= 1.
    Returns:
        ``(d,)`` unit vector.
    """
    return normalize(np.asarray(samples, dtype=np.float32).mean(axis=0))


def best_sample_scores(queries: np.ndarray, samples: np.ndarray, counts: np.ndarray, top_m: int = DEFAULT_TOP_M) -> np.ndarray:
    """Per query and adapter: the mean of the ``top_m`` highest sample cosines.

    Args:
        queries: ``(q, d)`` unit rows.
        samples: ``(s, d)`` the sample embeddings of several adapters, stacked in adapter order.
        counts: ``(a,)`` how many rows of ``samples`` each adapter owns (each >= 1).
        top_m: samples averaged per adapter; an adapter with fewer uses all it has.
    Returns:
        ``(q, a)`` scores.
    """
    if top_m < 1:
        raise ValueError("top_m must be at least 1")
    sims = np.asarray(queries, dtype=np.float32) @ np.asarray(samples, dtype=np.float32).T
    counts = np.asarray(counts, dtype=np.int64)
    # lay the sample cosines out as (query, adapter, slot), -inf where an adapter has fewer samples
    owner = np.repeat(np.arange(len(counts)), counts)
    slot = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.full((sims.shape[0], len(counts), int(counts.max())), -np.inf, dtype=np.float32)
    padded[:, owner, slot] = sims
    m = min(top_m, padded.shape[2])
    best = -np.partition(-padded, m - 1, axis=2)[:, :, :m] if m < padded.shape[2] else padded
    best = np.where(np.isfinite(best), best, 0.0)
    return best.sum(axis=2) / np.minimum(counts, top_m)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; -inf entries never chosen."""
    scores = np.asarray(scores)
    finite = np.flatnonzero(np.isfinite(scores))
    if finite.size == 0:
        return finite
    k = min(k, finite.size)
    part = finite[np.argpartition(-scores[finite], k - 1)[:k]] if k < finite.size else finite
    return part[np.argsort(-scores[part], kind="stable")]


def softmax_weights(scores: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """``softmax(scores / temperature)``; sums to 1. Temperature must be > 0."""
    if not temperature > 0:
        raise ValueError("temperature must be > 0")
    z = np.asarray(scores, dtype=np.float64) / temperature
    if z.size == 0:
        return z
    z = np.exp(z - z.max())
    return z / z.sum()

"""RECALL: representation-aligned, layer-wise merging against forgetting.

"RECALL: REpresentation-aligned Catastrophic-forgetting ALLeviation via
Hierarchical Model Merging", 2025, https://arxiv.org/abs/2510.20479.
No official code exists; every choice below is ours and is a parameter
where it is a number.

1. Typical samples: the new domain's texts (the request's dataset) are
   embedded by the *new* model (mean-pooled last hidden state); k-means
   with ``k`` clusters (scikit-learn, k-means++ init, fixed ``seed``); the
   sample nearest each centroid is kept. ``k`` is capped at the number of
   texts.
2. Every input model runs on the typical samples with hidden states; a
   layer's representation of a sample is its hidden state mean-pooled over
   the non-padding tokens. Hidden state 0 is the embedding output, hidden
   state l+1 the output of block l.
3. Per layer, the similarity of model m to the new model is the mean over
   samples of the RBF kernel ``exp(-||h_m - h_new||^2 / (2 sigma^2))``. With
   ``bandwidth`` 0, sigma^2 is the median heuristic: half the median of the
   squared pairwise distances between all representations at that layer
   (all models x all samples), so the kernel adapts to each layer's scale.
4. Per layer, the merge weights are ``softmax(similarity / temperature)``
   over the models. Temperature 1.0 by default: the new model's
   self-similarity is 1, so a low temperature hands it nearly all the weight
   (at 0.1, an old model at similarity 0.2 gets 0.03%) and the merge stops
   protecting what the old models knew.
5. Each block's parameters are merged with that block's weights (a linear
   merge, exact in LoRA space). Embedding parameters (names without a block
   index that come before the first block: see :func:`layer_row`) take the
   weights of hidden state 0; everything else outside the blocks (final
   norm, LM head, classifier) takes the weights of the last hidden state.

The new model is ``new_index`` among the inputs (default -1, the last).
Input weights are not taken: the layer-wise weights replace them.
"""

from __future__ import annotations

import re

import torch

from deltahub.errors import InvalidInputError
from deltahub.merging.params import is_input_embedding
from deltahub.merging.spec import MergeMethod, MethodSpec, ParamSpec, Plan

_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def typical_samples(embeddings: torch.Tensor, k: int, *, seed: int = 0) -> list[int]:
    """Indices of the samples nearest each k-means centroid (distinct, sorted).

    Args:
        embeddings: (n, d) sample embeddings.
        k: number of clusters (capped at n).
        seed: k-means seed.
    Returns:
        up to k sample indices.
    """
    from sklearn.cluster import KMeans

    n = embeddings.shape[0]
    k = max(1, min(k, n))
    x = embeddings.double().numpy()
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    centers = torch.from_numpy(km.cluster_centers_)
    dist = torch.cdist(centers, embeddings.double())
    chosen: list[int] = []
    for row in dist:
        for idx in row.argsort().tolist():  # nearest sample not already taken by another centroid
            if idx not in chosen:
                chosen.append(idx)
                break
    return sorted(chosen)


def median_bandwidth_sq(reps: torch.Tensor) -> float:
    """sigma^2 by the median heuristic: median squared pairwise distance / 2.

    Args:
        reps: (m, d) representations (all models x samples at one layer).
    """
    d2 = torch.cdist(reps.double(), reps.double()).pow(2)
    off = d2[~torch.eye(d2.shape[0], dtype=torch.bool)]
    med = float(off.median()) if off.numel() else 0.0
    return med / 2 if med > 0 else 1.0


def rbf_similarity(reps: torch.Tensor, new_index: int, *, bandwidth: float = 0.0) -> torch.Tensor:
    """Per layer, each model's mean RBF similarity to the new model.

    Args:
        reps: (models, layers, samples, d) mean-pooled hidden states.
        new_index: which model is the new one.
        bandwidth: sigma; 0 picks it per layer by the median heuristic.
    Returns:
        (layers, models) similarities in [0, 1]; the new model's column is 1.
    """
    models, layers = reps.shape[0], reps.shape[1]
    out = torch.empty(layers, models, dtype=torch.float64)
    for layer in range(layers):
        r = reps[:, layer].double()  # (models, samples, d)
        sigma_sq = bandwidth**2 if bandwidth > 0 else median_bandwidth_sq(r.reshape(-1, r.shape[-1]))
        d2 = (r - r[new_index]).pow(2).sum(-1)  # (models, samples)
        out[layer] = torch.exp(-d2 / (2 * sigma_sq)).mean(-1)
    return out


def layer_weights(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(similarity / temperature) over models, per layer: (layers, models)."""
    if temperature <= 0:
        raise InvalidInputError(f"temperature must be positive, got {temperature}")
    return torch.softmax(similarity / temperature, dim=1)


def layer_row(name: str, num_rows: int) -> int:
    """Which hidden state's weights a parameter takes (see module doc, step 5)."""
    m = _BLOCK.search(name)
    if m:
        return min(int(m.group(1)) + 1, num_rows - 1)
    if is_input_embedding(name) or re.search(r"(?:^|\.)embeddings\.", name):  # incl. BERT's embeddings LayerNorm
        return 0
    return num_rows - 1


class Recall(MergeMethod):
    spec = MethodSpec(
        name="recall",
        title="RECALL (representation-aligned hierarchical merging)",
        paper="RECALL: REpresentation-aligned Catastrophic-forgetting ALLeviation via Hierarchical Model Merging, 2025",
        url="https://arxiv.org/abs/2510.20479",
        params=(
            ParamSpec("k", int, 8, "number of typical samples (k-means clusters)"),
            ParamSpec("bandwidth", float, 0.0, "RBF sigma; 0 = median heuristic per layer"),
            ParamSpec("temperature", float, 1.0, "softmax temperature over the similarities"),
            ParamSpec("new_index", int, -1, "which input is the new model (default the last)"),
            ParamSpec("seed", int, 0, "k-means seed"),
            ParamSpec("max_samples", int, 512, "dataset rows read for the k-means"),
        ),
        min_inputs=2,
        needs_data=True,
        takes_weights=False,
    )

    def prepare(self, probe, params, weights) -> Plan:
        n = probe.num_inputs
        new = params["new_index"] % n if -n <= params["new_index"] < n else None
        if new is None:
            raise InvalidInputError(f"new_index {params['new_index']} is out of range for {n} inputs")
        if params["k"] < 1:
            raise InvalidInputError(f"k must be at least 1, got {params['k']}")
        texts = probe.texts(params["max_samples"])
        embeddings = probe.representations(new, texts)[-1]  # (samples, d) at the last hidden state
        chosen = typical_samples(embeddings, params["k"], seed=params["seed"])
        picked = [texts[i] for i in chosen]
        reps = torch.stack([torch.stack(probe.representations(m, picked)) for m in range(n)])
        sims = rbf_similarity(reps, new, bandwidth=params["bandwidth"])
        weights_ = layer_weights(sims, params["temperature"])
        return Plan(
            data={"layer_weights": weights_},
            report={"typical_samples": picked, "new_index": new,
                    "layer_weights": [[round(float(w), 6) for w in row] for row in weights_],
                    "similarity": [[round(float(s), 6) for s in row] for row in sims]},
        )

    def coefficients(self, name, n, weights, params, plan: Plan) -> list[float]:
        table: torch.Tensor = plan.data["layer_weights"]
        return [float(w) for w in table[layer_row(name, table.shape[0])]]



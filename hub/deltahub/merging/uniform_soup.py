"""Uniform model soup: the mean of the ingredients' weights.

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time", ICML 2022,
https://arxiv.org/abs/2203.05482.

All ingredients share the base, so the mean of the models is the base plus
the mean of their task vectors; the merge is linear (exact in LoRA space).
Choice: input weights, when given, make it a weighted mean (normalised to
sum 1); without them every ingredient counts 1/n as in the paper.
"""

from __future__ import annotations

from typing import Sequence

from deltahub.merging.spec import MergeMethod, MethodSpec, Plan


def soup_coefficients(n: int, weights: Sequence[float] | None = None) -> list[float]:
    """1/n each, or w_i / sum(w)."""
    if weights is None:
        return [1.0 / n] * n
    total = float(sum(weights))
    if total == 0:
        raise ValueError("soup weights sum to zero")
    return [float(w) / total for w in weights]


class UniformSoup(MergeMethod):
    spec = MethodSpec(
        name="uniform_soup",
        title="Uniform model soup",
        paper="Wortsman et al., Model soups, ICML 2022",
        url="https://arxiv.org/abs/2203.05482",
    )

    def coefficients(self, name, n, weights, params, plan: Plan) -> list[float]:
        return soup_coefficients(n, weights)

"""Greedy model soup: add ingredients best-first, keep one only if held-out score improves.

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time", ICML 2022,
https://arxiv.org/abs/2203.05482 (Recipe 1, "GreedySoup").

Sort the ingredients by their own held-out score (descending), start the soup
with the best, and add each next ingredient if the uniform soup with it
scores strictly better than the soup without it. The result is the uniform
soup of the kept ingredients: a linear merge.

Choices: the held-out set is the request's dataset revision, scored by
:mod:`deltahub.evaluation` (accuracy for classification models, negative
mean token loss for causal LMs, so higher is always better); ties in the
initial sort keep input order. Input weights are not taken: the soup decides.
"""

from __future__ import annotations

from typing import Callable, Sequence

from deltahub.merging.spec import MergeMethod, MethodSpec, Plan
from deltahub.merging.uniform_soup import soup_coefficients


def greedy_select(n: int, evaluate: Callable[[Sequence[int]], float]) -> tuple[list[int], list[float], float]:
    """The greedy soup's ingredient selection.

    Args:
        n: number of ingredients.
        evaluate: held-out score (higher is better) of the uniform soup of the given indices.
    Returns:
        (kept indices in the order added, each ingredient's own score, the final soup's score).
    """
    own = [evaluate([i]) for i in range(n)]
    order = sorted(range(n), key=lambda i: -own[i])  # stable: ties keep input order
    soup, best = [order[0]], own[order[0]]
    for i in order[1:]:
        score = evaluate(soup + [i])
        if score > best:
            soup, best = soup + [i], score
    return soup, own, best


def selection_coefficients(n: int, kept: Sequence[int]) -> list[float]:
    share = soup_coefficients(len(kept))[0]
    return [share if i in kept else 0.0 for i in range(n)]


class GreedySoup(MergeMethod):
    spec = MethodSpec(
        name="greedy_soup",
        title="Greedy model soup",
        paper="Wortsman et al., Model soups, ICML 2022",
        url="https://arxiv.org/abs/2203.05482",
        needs_data=True,
        takes_weights=False,
    )

    def prepare(self, probe, params, weights) -> Plan:
        n = probe.num_inputs
        kept, own, best = greedy_select(n, lambda idx: probe.score(selection_coefficients(n, idx)))
        return Plan(
            data={"kept": kept},
            report={"metric": probe.metric, "ingredient_scores": own, "kept": kept, "soup_score": best},
        )

    def coefficients(self, name, n, weights, params, plan: Plan) -> list[float]:
        return selection_coefficients(n, plan.data["kept"])

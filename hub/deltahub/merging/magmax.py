"""MagMax: per entry, the task vector of largest magnitude.

Marczak, Twardowski, Trzcinski, Cygert, "MagMax: Leveraging Model Merging for
Seamless Continual Learning", ECCV 2024, https://arxiv.org/abs/2407.06322.

For each parameter entry, over the task vectors ``tau_t = theta_t - theta_0``
in task order, keep the entry of largest absolute value; the result is
``theta_0 + lambda * selected`` with lambda 0.5 as in the paper.

Choices:
* Ties go to the later task, as the official code's running
  ``where(|current| >= |best|, current, best)`` does.
* The sequential setting (each theta_t fine-tuned from theta_{t-1}) and the
  independent one differ only in which checkpoints are passed: give the
  checkpoints theta_1..theta_T in task order; their deltas against theta_0
  are then cumulative in the sequential case, as in the paper.
* Input weights scale each task vector before the selection (default 1).
"""

from __future__ import annotations

from typing import Sequence

import torch

from deltahub.merging.spec import MergeMethod, MethodSpec, ParamGroup, ParamSpec, Plan


def magmax(deltas: Sequence[torch.Tensor], *, scale: float = 0.5) -> torch.Tensor:
    """Max-magnitude selection across task vectors.

    Args:
        deltas: task vectors of one parameter, in task order.
        scale: lambda, applied to the selected entries.
    Returns:
        scale * (entry of largest |tau_t|, the later task on a tie).
    """
    selected = deltas[0].clone()
    for delta in deltas[1:]:
        selected = torch.where(delta.abs() >= selected.abs(), delta, selected)
    return selected.mul_(scale)


class MagMax(MergeMethod):
    spec = MethodSpec(
        name="magmax",
        title="MagMax (maximum magnitude selection)",
        paper="Marczak et al., MagMax: Leveraging Model Merging for Seamless Continual Learning, ECCV 2024",
        url="https://arxiv.org/abs/2407.06322",
        params=(ParamSpec("lambda", float, 0.5, "scale of the selected task vector"),),
        mixes_by_weight=False,
    )

    def merge(self, group: ParamGroup, params: dict, plan: Plan) -> torch.Tensor:
        weights = group.weights_or_ones()
        deltas = [d if w == 1.0 else d * w for d, w in zip(group.deltas, weights)]
        return magmax(deltas, scale=params["lambda"])

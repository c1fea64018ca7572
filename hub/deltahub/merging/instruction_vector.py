"""Instruction-vector merging: a domain model plus the base's instruction vector.

Hirano and Imajo, "The Construction of Instruction-tuned LLMs for
Finance without Instruction Data Using Continual Pretraining and Model
Merging", 2024, https://arxiv.org/abs/2409.19854; cf. Huang et al., "Chat
Vector", https://arxiv.org/abs/2310.04799.

``theta = theta_domain + alpha * (theta_instruct - theta_base)``, alpha 1.0 as
in the paper. Inputs, in this order: the domain model (continually
pre-trained from the base) and the instruction-tuned model (tuned from the
same base). In delta space: ``tau_domain + alpha * tau_instruct``, a linear
merge. The instruction vector alone is the task vector of the instruct model
(``deltahub task-vector INSTRUCT BASE``) and may be passed as the second
input instead of the model.

Choice: ``skip_embeddings`` keeps the domain model's embeddings and LM head
(Chat Vector does this when the vocabulary was extended); a parameter counts
as one by :func:`deltahub.merging.params.is_embedding` (input embeddings and
output heads of the common architectures).
"""

from __future__ import annotations

from deltahub.merging.params import is_embedding
from deltahub.merging.spec import MergeMethod, MethodSpec, ParamSpec, Plan


class InstructionVector(MergeMethod):
    spec = MethodSpec(
        name="instruction_vector",
        title="Instruction-vector merging (continual pre-training + chat vector)",
        paper="Hirano and Imajo, The Construction of Instruction-tuned LLMs for Finance without Instruction "
              "Data Using Continual Pretraining and Model Merging, 2024",
        url="https://arxiv.org/abs/2409.19854",
        params=(
            ParamSpec("alpha", float, 1.0, "scale of the instruction vector"),
            ParamSpec("skip_embeddings", bool, False, "keep the domain model's embeddings and LM head"),
        ),
        min_inputs=2,
        max_inputs=2,
    )

    def coefficients(self, name, n, weights, params, plan: Plan) -> list[float]:
        if params["skip_embeddings"] and is_embedding(name):
            return [1.0, 0.0]
        return [1.0, params["alpha"]]

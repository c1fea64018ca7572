"""Merge methods (one file each, pure tensor functions) and their registry.

:data:`MERGE_METHODS` holds deltahub's own methods and every method mergekit
registers, under mergekit's names; deltahub's per-parameter methods are also
registered into mergekit, so mergekit YAML can name them.
"""

from deltahub.merging.greedy_soup import GreedySoup
from deltahub.merging.instruction_vector import InstructionVector
from deltahub.merging.magmax import MagMax
from deltahub.merging.mergekit_bridge import mergekit_methods, register_into_mergekit
from deltahub.mergekit_yaml import INTO_MERGEKIT
from deltahub.merging.recall import Recall
from deltahub.merging.spec import MergeMethod, MethodSpec, ParamGroup, ParamSpec, Plan
from deltahub.merging.uniform_soup import UniformSoup
from deltahub.registry import Registry

__all__ = ["MERGE_METHODS", "MergeMethod", "MethodSpec", "ParamGroup", "ParamSpec", "Plan"]

MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")

for _method in (MagMax(), UniformSoup(), GreedySoup(), Recall(), InstructionVector()):
    MERGE_METHODS.register(_method.spec.name, _method)
register_into_mergekit([MERGE_METHODS.get(name) for name in INTO_MERGEKIT])
for _method in mergekit_methods():
    if _method.spec.name not in MERGE_METHODS:  # ours, registered into mergekit just above
        MERGE_METHODS.register(_method.spec.name, _method)
del _method

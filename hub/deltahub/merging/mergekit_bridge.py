"""mergekit as a library, both ways (mergekit is LGPL: imported, never copied).

* :class:`MergekitMethod` runs any method mergekit registers (linear,
  task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, della, slerp,
  nuslerp, model_stock, ...) inside deltahub's streaming executor, one
  parameter at a time, through mergekit's own in-memory kernels. Its
  parameters are mergekit's (read from the method's spec). When every input
  is a full model, the kernel gets the models' own tensors in the base's
  stored dtype, as ``run_merge`` with ``dtype`` = the models' dtype does
  (bfloat16 models merge in bfloat16, bit for bit mergekit's result);
  otherwise (adapters, task vectors) the inputs enter as ``theta_0 + tau_i``
  in float32. The result leaves as a delta. DARE and DELLA draw their masks
  from torch's generator, seeded per parameter by the executor, so their
  recipes rebuild bit for bit.
* :func:`register_into_mergekit` adds deltahub's own per-parameter methods
  (``magmax``, ``instruction_vector``) to mergekit's registry, so a mergekit
  YAML that names them runs under ``mergekit-yaml`` / ``run_merge`` too.

Two mergekit methods are linear and get exact LoRA-space merges:
``linear`` with ``normalize`` (the default), ``sum_i w_i theta_i / sum_i w_i =
theta_0 + sum_i (w_i / sum w) tau_i``, and ``task_arithmetic``,
``theta_0 + lambda * sum_i w_i tau_i`` (divided by ``sum w`` when normalised).
A test checks both against mergekit's own output.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import yaml

from deltahub.merging.settings import canonical
from deltahub.merging.sources import work_dtype
from deltahub.merging.spec import MergeMethod, MethodSpec, ParamGroup, ParamSpec, Plan, linear_combination

_BASE_ID = "base"


def _input_ids(n: int) -> list[str]:
    return [f"input{i}" for i in range(n)]


def _parse_value(value: Any) -> Any:
    """CLI values arrive as text; mergekit's own pydantic types check them afterwards."""
    return yaml.safe_load(value) if isinstance(value, str) else value


class MergekitMethod(MergeMethod):
    def __init__(self, method) -> None:
        from mergekit.merge_methods.base import BasePolicy, ParameterScope

        self._method = method
        self._scopes = {p.name: p.scope for p in method.spec.parameters}
        self._uses_base = method.spec.contract.base in (BasePolicy.REQUIRED, BasePolicy.OPTIONAL)
        sparsify = getattr(method, "sparsification_method", None)
        self.stochastic = getattr(sparsify, "value", None) in ("random", "della_magprune")  # DARE, DELLA
        c = method.spec.contract
        self.spec = MethodSpec(
            name=method.spec.name,
            title=method.spec.pretty_name or method.spec.name,
            paper=f"mergekit method {method.spec.name}",
            url=method.spec.reference_url or "https://github.com/arcee-ai/mergekit",
            params=tuple(
                ParamSpec(p.name, object, None if p.required else p.default, f"mergekit parameter ({p.scope.value})",
                          parse=p.validate, per_input=p.scope is not ParameterScope.SHARED)
                for p in method.spec.parameters
                if p.name != "weight"
            ),
            min_inputs=max(1, (c.min_non_base or 0) if self._uses_base else c.min_inputs),
            max_inputs=(c.max_non_base if self._uses_base else c.max_inputs),
            takes_weights="weight" in self._scopes,
            source="mergekit",
        )

    def mergekit_parameters(self, n: int, weights: Sequence[float] | None, params: dict[str, Any]) -> dict[str, Any]:
        ids = _input_ids(n)
        out = {}
        for k, v in params.items():
            if v is None:
                continue
            # a list is one value per input (mergekit YAML's per-model parameters)
            out[k] = dict(zip(ids, map(_parse_value, v))) if isinstance(v, list) else _parse_value(v)
        if self.spec.takes_weights:
            w = list(weights) if weights is not None else [1.0] * n
            out["weight"] = dict(zip(_input_ids(n), map(float, w)))
        return out

    def validate(self, params: dict[str, Any], n: int) -> None:
        """Every required parameter given (the settings, or one tensor's resolved values)."""
        from deltahub.errors import InvalidInputError

        for p in self._method.spec.parameters:
            if p.name == "weight":
                continue
            value = params.get(p.name)
            if value is None and p.required:
                raise InvalidInputError(f"method {self.spec.name} needs parameter {p.name} (--param {p.name}=VALUE)")

    def resolve_input_params(self, given, n):
        from deltahub.errors import InvalidInputError

        if not given or not any(given):
            return None
        if len(given) != n:
            raise InvalidInputError(f"{len(given)} sets of per-input parameters for {n} inputs; give one per input")
        specs = {p.name: p for p in self._method.spec.parameters}
        out = []
        for i, settings in enumerate(given):
            if not isinstance(settings, dict):
                raise InvalidInputError(f"per-input parameters of input {i} must be a mapping of name: value")
            norm = {}
            for name, value in sorted(settings.items()):
                p = specs.get(name)
                if p is None:
                    raise InvalidInputError(f"method {self.spec.name} has no parameter {name!r}; its parameters: "
                                            f"{', '.join(sorted(specs))}")
                if p.scope.value == "shared":
                    raise InvalidInputError(f"parameter {name} of {self.spec.name} is one for all inputs: set it "
                                            "in the global parameters, not per input")
                norm[name] = canonical(name, value, p.validate)
            out.append(norm)
        return tuple(out)

    def tensor_settings(self, name, t, settings):
        """mergekit's own resolution (its precedence: the input's settings, then the global ones, then the
        default), at this tensor's name and layer position."""
        from mergekit.parameter_resolver import resolve_parameter

        from deltahub.errors import InvalidInputError

        glob, inputs = settings.structured_params, settings.structured_inputs
        out: dict[str, Any] = {}
        weights = None
        try:
            for p in self._method.spec.parameters:
                if p.name == "weight":
                    continue
                if p.scope.value == "shared" or not settings.input_params:
                    out[p.name] = resolve_parameter(p, (glob,), tensor_name=name, t=t)
                    continue
                values = [resolve_parameter(p, (own, glob), tensor_name=name, t=t) for own in inputs]
                out[p.name] = values if any(v != values[0] for v in values) else values[0]
            if self.spec.takes_weights and settings.n:
                spec = next(p for p in self._method.spec.parameters if p.name == "weight")
                plain = settings.weights or [1.0] * settings.n
                weights = [float(resolve_parameter(spec, (own, {"weight": w}), tensor_name=name, t=t))
                           for own, w in zip(inputs, plain)]
        except RuntimeError as err:  # mergekit's resolver: a required value that no setting gives this tensor
            raise InvalidInputError(f"{err}; give it for every tensor (a filter entry without `filter` is the "
                                    "default)") from None
        return out, weights

    def wants_thetas(self, params: dict) -> bool:
        return not self._is_linear(params)

    def merge(self, group: ParamGroup, params: dict, plan: Plan) -> torch.Tensor:
        from mergekit.merge_methods.base import TensorGroup

        n = group.size
        coeffs = self.coefficients(group.name, n, group.weights, params, plan)
        if coeffs is not None:  # same result as the kernel (tested to 1e-6) without its base add/subtract
            return linear_combination(group.deltas, coeffs)
        if group.thetas is not None:
            # full models as run_merge hands them to the kernel: in their stored dtype, no float32 copies
            base = group.base
            tensors = [t.to(base.dtype) for t in group.thetas]
        else:
            base = group.base.to(group.deltas[0].dtype)
            tensors = [base + d for d in group.deltas]
        ids = _input_ids(n)
        if self._uses_base:
            tensors, ids, base_index = [base] + tensors, [_BASE_ID] + ids, 0
        else:
            base_index = None
        tg = TensorGroup.from_tensors(tensors, ids=ids, base_index=base_index, name=group.name)
        (merged,) = self._method((tg,), parameters=self.mergekit_parameters(n, group.weights, params))
        work = work_dtype(base.dtype)
        return merged.to(work) - base.to(work)

    def coefficients(self, name, n, weights, params, plan: Plan) -> list[float] | None:
        """``c_i = scale * w_i`` for the two linear methods, None for the rest."""
        if not self._is_linear(params):
            return None
        w = [float(x) for x in (weights if weights is not None else [1.0] * n)]
        total = sum(w)
        if self.spec.name == "linear":
            return [x / total for x in w] if total else None
        p = {k: _parse_value(v) for k, v in params.items()}  # task_arithmetic
        scale = float(p.get("lambda", 1.0))
        if p.get("normalize"):
            scale /= total if abs(total) >= 1e-8 else 1.0
        return [x * scale for x in w]

    def _is_linear(self, params: dict) -> bool:
        return self.spec.name == "task_arithmetic" or (
            self.spec.name == "linear" and _parse_value(params.get("normalize", True)) is not False)


def mergekit_methods() -> list[MergekitMethod]:
    from mergekit import merge_methods

    return [MergekitMethod(m) for m in merge_methods.registered_methods()]


# -- deltahub's methods inside mergekit ----------------------------------------------


def _as_mergekit(method: MergeMethod):
    from mergekit.merge_methods.base import (
        BasePolicy,
        GroupMergeMethod,
        InputContract,
        MergeMethodSpec,
        ParameterScope,
        ParameterSpec,
    )

    ours = method.spec

    class Wrapped(GroupMergeMethod):
        spec = MergeMethodSpec(
            name=ours.name,
            pretty_name=ours.title,
            reference_url=ours.url,
            parameters=(
                *(ParameterSpec(p.name, p.type, ParameterScope.SHARED, default=p.default, description=p.help)
                  for p in ours.params),
                ParameterSpec("weight", float, ParameterScope.NON_BASE, default=1.0),
            ),
            contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=ours.min_inputs,
                                   max_non_base=ours.max_inputs),
        )

        def merge_group(self, group, /, **parameters: Any) -> torch.Tensor:
            base = group.base.tensor
            entries = group.non_base
            work = torch.float64 if base.dtype == torch.float64 else torch.float32
            pg = ParamGroup(
                name=group.metadata.name or "",
                base=base.to(work),
                deltas=[e.tensor.to(work) - base.to(work) for e in entries],
                weights=[float(parameters["weight"][e.id]) for e in entries],
            )
            params = {p.name: parameters[p.name] for p in ours.params}
            return (pg.base + method.merge(pg, params, Plan())).to(base.dtype)

    return Wrapped()


def register_into_mergekit(methods: Sequence[MergeMethod]) -> list[str]:
    """Adds the given deltahub methods to mergekit's registry (once); returns their names."""
    from mergekit import merge_methods

    present = {m.spec.name for m in merge_methods.registered_methods()}
    added = []
    for method in methods:
        if method.spec.name not in present:
            merge_methods.register(_as_mergekit(method))
            added.append(method.spec.name)
    return added

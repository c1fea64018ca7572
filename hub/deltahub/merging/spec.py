"""What a merge method declares, and the one interface every method has.

Every method works in task-vector space: the executor hands it, for one
parameter, the base tensor and the deltas ``tau_i = theta_i - theta_0`` of its
inputs, and it returns the merged delta. For inputs that share a base this
loses nothing (a mean of models is the base plus the mean of their deltas) and
it lets one executor serve full models, task vectors and adapters alike.

A *linear* method also says, per parameter, the coefficients ``c_i`` with
``merged = sum_i c_i * tau_i``. That is what keeps a merge of LoRA adapters
exact in LoRA space: ``sum_i c_i * s_i * B_i @ A_i`` is ``[c_1 s_1 B_1 | ...]
@ [A_1; ...]``, a LoRA of rank ``sum_i r_i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from deltahub.errors import InvalidInputError

_CASTS: dict[type, Callable[[Any], Any]] = {float: float, int: int, str: str}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean")


_CASTS[bool] = _to_bool
_CASTS[object] = lambda value: value  # checked by the method itself (mergekit's own types)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    default: Any
    help: str = ""
    # the library's own check of one value (mergekit's parameter spec): a setting is then anything mergekit
    # reads (a scalar, a gradient over layers, filters), written in its normal form (deltahub.merging.settings)
    parse: Callable[[Any], Any] | None = None
    per_input: bool = False  # may differ per input (mergekit's input-scoped parameters)

    def cast(self, value: Any) -> Any:
        if self.parse is not None:
            from deltahub.merging.settings import canonical

            return canonical(self.name, value, self.parse)
        if isinstance(value, (list, dict)):
            raise InvalidInputError(
                f"parameter {self.name}={value!r} takes one {self.type.__name__}: gradients over layers, filters "
                "and per-input values are read for mergekit's methods only")
        try:
            return _CASTS[self.type](value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"parameter {self.name}={value!r} is not a {self.type.__name__}") from None


@dataclass(frozen=True)
class MethodSpec:
    """A method's declaration: its name in the API, its paper, its parameters.

    ``needs_data`` methods read a dataset revision during planning (greedy
    soup evaluates on it, RECALL picks typical samples from it).
    """

    name: str
    title: str
    paper: str
    url: str
    params: tuple[ParamSpec, ...] = ()
    min_inputs: int = 1
    max_inputs: int | None = None
    needs_data: bool = False
    takes_weights: bool = True
    # Whether mixing proportions (weights summing to 1, as the router gives) are
    # meaningful input weights; False where weights scale inputs before a
    # selection (MagMax), so the router's weights would only shrink the result.
    mixes_by_weight: bool = True
    source: str = "deltahub"

    def resolve_params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """The parameters with defaults filled in, each cast to its declared type."""
        given = dict(given or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            names = ", ".join(sorted(known)) or "none"
            raise InvalidInputError(f"method {self.name} has no parameter(s) {unknown}; its parameters: {names}")
        return {name: p.cast(given[name]) if name in given else p.default for name, p in known.items()}

    def check_inputs(self, count: int, weights: Sequence[float] | None = None) -> None:
        if weights is not None and not self.takes_weights:
            raise InvalidInputError(f"method {self.name} computes its own weights; give no --weights")
        check_weights(weights, count)
        if count < self.min_inputs:
            raise InvalidInputError(f"method {self.name} needs at least {self.min_inputs} input(s), got {count}")
        if self.max_inputs is not None and count > self.max_inputs:
            raise InvalidInputError(f"method {self.name} takes at most {self.max_inputs} input(s), got {count}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "paper": self.paper, "url": self.url, "source": self.source,
            "needs_data": self.needs_data, "takes_weights": self.takes_weights, "min_inputs": self.min_inputs,
            "params": [{"name": p.name, "type": p.type.__name__, "default": p.default, "help": p.help} for p in self.params],
        }


@dataclass
class ParamGroup:
    """One parameter of the merge: the base tensor and each input's delta (float32 or float64).

    For a method that :meth:`MergeMethod.wants_thetas`, when every input is a
    full model, ``thetas`` holds the inputs' own tensors in the base's stored
    dtype instead, ``base`` is the base's stored tensor and ``deltas`` is empty.
    """

    name: str
    base: torch.Tensor
    deltas: list[torch.Tensor]
    weights: Sequence[float] | None = None
    thetas: list[torch.Tensor] | None = None

    @property
    def size(self) -> int:
        return len(self.thetas if self.thetas is not None else self.deltas)

    def weights_or_ones(self) -> list[float]:
        return list(self.weights) if self.weights is not None else [1.0] * self.size


@dataclass
class Plan:
    """What a method learned before streaming (greedy soup's ingredients, RECALL's layer weights).

    ``report`` goes into the merged revision's lineage metrics.
    """

    data: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


class MergeMethod:
    """Base class: a spec, an optional planning step and a per-parameter merge."""

    spec: MethodSpec
    # Draws random numbers (DARE's drop masks): the executor then runs its
    # parameters one at a time, each under its own seed, so a recipe rebuilds
    # bit for bit.
    stochastic: bool = False

    def wants_thetas(self, params: dict[str, Any]) -> bool:
        """True when the method works on the inputs' own tensors (mergekit's kernels)
        and gains nothing from float32 deltas; the executor then skips computing them."""
        return False

    def resolve_input_params(self, given: Sequence[dict[str, Any]] | None, n: int) -> tuple[dict[str, Any], ...] | None:
        """Per-input settings (mergekit's per-model ``parameters``), in normal form; only mergekit's methods take them."""
        if given and any(given):
            raise InvalidInputError(f"method {self.spec.name} takes no per-input parameters; give weights "
                                    "(--weights) and one value per parameter")
        return None

    def tensor_settings(self, name: str, t: float, settings) -> tuple[dict[str, Any], list[float] | None]:
        """(params, weights) for one tensor at layer position ``t`` (see deltahub.merging.settings): a
        method with one value per parameter gets its parameters as given."""
        return settings.params, settings.weights

    def prepare(self, probe: Any, params: dict[str, Any], weights: Sequence[float] | None) -> Plan:
        """Runs once before streaming; only ``needs_data`` methods use the probe."""
        return Plan()

    def validate(self, params: dict[str, Any], n: int) -> None:
        """Checks beyond the declared types, before any tensor is read."""

    def coefficients(
        self, name: str, n: int, weights: Sequence[float] | None, params: dict[str, Any], plan: Plan
    ) -> list[float] | None:
        """``c_i`` with merged = sum_i c_i * tau_i for this parameter, or None for a non-linear merge."""
        return None

    def merge(self, group: ParamGroup, params: dict[str, Any], plan: Plan) -> torch.Tensor:
        coeffs = self.coefficients(group.name, group.size, group.weights, params, plan)
        if coeffs is None:
            raise NotImplementedError(f"{type(self).__name__} must implement merge() or coefficients()")
        return linear_combination(group.deltas, coeffs)


def linear_combination(deltas: Sequence[torch.Tensor], coeffs: Sequence[float]) -> torch.Tensor:
    """sum_i c_i * deltas[i], skipping zero coefficients.

    Args:
        deltas: tensors of one shape and dtype.
        coeffs: one float per delta.
    Returns:
        a new tensor (never one of the inputs).
    """
    if len(deltas) != len(coeffs):
        raise InvalidInputError(f"{len(deltas)} deltas but {len(coeffs)} coefficients")
    out = torch.zeros_like(deltas[0])
    for delta, c in zip(deltas, coeffs):
        if c:
            out.add_(delta, alpha=float(c))
    return out


def check_weights(weights: Sequence[float] | None, n: int) -> None:
    if weights is not None and len(weights) != n:
        raise InvalidInputError(f"{len(weights)} weights given for {n} inputs; give one weight per input")

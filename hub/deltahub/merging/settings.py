"""Parameter values per tensor, read the way mergekit reads a configuration.

A mergekit parameter is set as

* a scalar: one value for every tensor;
* a *gradient*, a list of numbers: interpolated over the layers at
  ``t = layer / (layers - 1)`` (``[0, 0.5, 1]`` is 0 at the first layer, 1 at
  the last); tensors outside the layer stack (embeddings, final norm, head)
  read it at ``t = 0``, as mergekit's planner does;
* a list of ``{filter, value}``: the first entry whose ``filter`` is a
  substring of the tensor's name (or that has none) gives the value, itself a
  scalar or a gradient;

globally (``parameters``) or per input (a model's own ``parameters``, which
take precedence). The resolution is mergekit's own
(``mergekit.parameter_resolver.resolve_parameter``), so a configuration run
here and under ``mergekit-yaml`` gives every tensor the same values.

:func:`canonical` writes a setting once in a normal form before the recipe is
hashed: text parsed as YAML and each number checked by the method's own
parameter spec, so ``"0.5"``, ``.5`` and ``0.5`` are one recipe, and a
gradient whose values are all equal is that value.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable, Sequence

import yaml

from deltahub.errors import InvalidInputError

# the layer stack of the common architectures: model.layers.N (Llama, Mistral, Qwen), transformer.h.N (GPT-2),
# encoder.layer.N (BERT), gpt_neox.layers.N, transformer.blocks.N (MPT)
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def layer_positions(names: Sequence[str]) -> dict[str, float]:
    """``t`` of every tensor: its layer's place in the stack, 0 outside it (mergekit's planner)."""
    layers = [layer_of(n) for n in names]
    count = max((i for i in layers if i is not None), default=-1) + 1
    return {n: (0.0 if i is None else (i / (count - 1) if count > 1 else 1.0)) for n, i in zip(names, layers)}


@functools.lru_cache(maxsize=1)
def _adapter():
    from pydantic import TypeAdapter

    from mergekit.config import ParameterSetting

    return TypeAdapter(ParameterSetting)


def _yaml(value: Any) -> Any:
    """Values typed on a command line arrive as text: read as YAML, as mergekit reads its files."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def is_tensor_dependent(value: Any) -> bool:
    """A gradient or a filter list: a value that depends on the tensor."""
    return isinstance(value, (list, dict))


def structured(value: Any):
    """The setting as mergekit's pydantic types (what its resolver takes)."""
    try:
        return _adapter().validate_python(_yaml(value))
    except Exception as err:  # pydantic's ValidationError names what is wrong
        raise InvalidInputError(f"{value!r} is not a mergekit parameter setting (a scalar, a list of numbers "
                                f"over layers, or a list of {{filter, value}}): {_first_line(err)}") from None


def canonical(name: str, value: Any, validate: Callable[[Any], Any]) -> Any:
    """The normal form of one setting, each scalar checked by ``validate`` (the method's parameter spec)."""
    from mergekit.config import ConditionalParameter

    def scalar(v):
        try:
            return validate(_yaml(v))
        except InvalidInputError:
            raise
        except Exception as err:
            raise InvalidInputError(f"parameter {name}={v!r}: {_first_line(err)}") from None

    def gradient(v):
        if not isinstance(v, list):
            return scalar(v)
        values = [scalar(e) for e in v]
        if len(values) == 1 or all(e == values[0] and type(e) is type(values[0]) for e in values):
            return values[0] if values else None
        return values

    def cond(c: ConditionalParameter) -> dict:
        out = {"value": gradient(c.value)}
        if c.filter is not None:
            out["filter"] = c.filter
        return out

    if value is None:
        return None
    s = structured(value)
    if isinstance(s, ConditionalParameter):
        s = [s]
    if isinstance(s, list) and any(isinstance(e, ConditionalParameter) for e in s):
        return [cond(c) for c in s]
    return gradient(s)


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:3])[:300]


class TensorSettings:
    """The parameters and weights a method gets for each tensor of one merge.

    ``params`` are the global settings (defaults filled in), ``input_params``
    one mapping per input, ``weights`` the plain per-input weights. A method
    whose settings hold no gradient or filter gets the same values for every
    tensor, computed once.
    """

    def __init__(self, method, params: dict[str, Any], input_params: Sequence[dict[str, Any]] | None,
                 weights: Sequence[float] | None, names: Sequence[str]) -> None:
        self.method = method
        self.params = dict(params)
        self.input_params = [dict(p) for p in input_params] if input_params else None
        self.weights = list(weights) if weights is not None else None
        # inputs, when the settings say (per-input parameters or weights); None: the method's own default
        self.n = len(self.input_params) if self.input_params else (len(self.weights) if self.weights else None)
        every = [self.params, *(self.input_params or [])]
        self._static = not any(is_tensor_dependent(v) for p in every for v in p.values())
        # mergekit's resolver takes its own pydantic forms; None (a required value not given) is left out
        self.structured_params = {k: structured(v) for k, v in self.params.items() if v is not None}
        self.structured_inputs = [{k: structured(v) for k, v in p.items() if v is not None}
                                  for p in self.input_params] if self.input_params else [{}] * (self.n or 0)
        self._t = layer_positions(names)
        self._memo: dict[str, tuple[dict, list[float] | None]] = {}

    def at(self, name: str) -> tuple[dict[str, Any], list[float] | None]:
        """(params, weights) for this tensor: scalars, and a list of one value per input for a per-input parameter."""
        key = "" if self._static else name
        if key not in self._memo:
            self._memo[key] = self.method.tensor_settings(name, self._t.get(name, 0.0), self)
        return self._memo[key]

    def check(self, names: Sequence[str], n: int) -> None:
        """Resolves every tensor's values now and lets the method check each distinct set: a missing or bad
        value is refused before any tensor is read."""
        seen = set()
        for name in ([names[0]] if self._static and names else names):
            params, weights = self.at(name)
            key = json.dumps([params, weights], sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                self.method.validate(params, n)

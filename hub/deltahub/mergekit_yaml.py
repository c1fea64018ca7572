"""mergekit YAML in and out.

In: a mergekit merge configuration (``merge_method``, ``base_model``,
``models`` with per-model ``parameters``, global ``parameters``, ``dtype``)
whose model names are hub revisions (``namespace/name[@ref]``) becomes a
merge request. Values keep mergekit's meaning: scalars, gradients over
layers and ``filter`` lists, globally or per model (the hub resolves them per
tensor with mergekit's own resolver, deltahub.merging.settings). Plain
per-model ``weight`` numbers become the input weights; every other per-model
setting goes to the input's own parameters. ``slices`` (passthrough,
frankenmerges: a layer stack other than the base's) and ``tokenizer``
options are refused with what to do instead: a merge here is a delta of the
base, which cannot describe another layer stack or vocabulary.

Out: a merged revision's recipe as a mergekit configuration, for methods
mergekit knows (its own, plus ``magmax`` and ``instruction_vector``, which
deltahub registers into it).
"""

from __future__ import annotations

from typing import Any

import yaml

from deltahub.errors import InvalidInputError

_UNSUPPORTED = ("slices", "tokenizer_source", "tokenizer", "chat_template", "modules")
# deltahub's methods that deltahub.merging registers into mergekit's registry
INTO_MERGEKIT = ("magmax", "instruction_vector")


def from_mergekit_yaml(text: str, *, validate: bool = True) -> dict[str, Any]:
    """{method, inputs, base, weights, params, dtype} from a mergekit configuration.

    ``validate`` checks the document against mergekit's schema (importing mergekit, seconds); the SDK
    leaves that out, since the hub checks the method and every parameter when the merge is asked."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidInputError(f"recipe is not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise InvalidInputError("a mergekit recipe must be a mapping")
    unsupported = [k for k in _UNSUPPORTED if doc.get(k)]
    if unsupported:
        raise InvalidInputError(
            f"mergekit options {unsupported} are not supported: a merge here is a delta of one base, which cannot "
            "describe another layer stack (slices) or vocabulary (tokenizer); run such a config with "
            "`deltahub mergekit-yaml CONFIG OUT` on local folders and push the result as a model")
    if validate:
        try:
            from mergekit.config import MergeConfiguration

            MergeConfiguration.model_validate(doc)
        except Exception as err:  # pydantic's ValidationError names the bad field
            raise InvalidInputError(f"not a valid mergekit configuration: {err}") from None
    if not isinstance(doc.get("merge_method"), str):
        raise InvalidInputError("a mergekit recipe needs merge_method: NAME")
    models = doc.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, dict) and m.get("model") for m in models):
        raise InvalidInputError("models must be a list of {model: NAMESPACE/NAME[@REF], parameters: {...}}")
    if not isinstance(doc.get("parameters") or {}, dict) or not all(
            isinstance(m.get("parameters") or {}, dict) for m in models):
        raise InvalidInputError("parameters must be a mapping of name: value")
    base = str(doc.get("base_model") or "")
    entries = [m for m in models if str(m.get("model")) != base]  # mergekit lists the base among models at times
    if not entries:
        raise InvalidInputError("the recipe lists no model to merge besides the base")
    params: dict[str, Any] = dict(doc.get("parameters") or {})
    shared_weight = params.pop("weight", None)  # mergekit: a global weight is every model's default
    per_model = [dict(m.get("parameters") or {}) for m in entries]
    given = [p.get("weight", shared_weight) for p in per_model]
    weights = None
    if all(_number(w) for w in given if w is not None) and any(w is not None for w in given):
        weights = [float(w) if w is not None else 1.0 for w in given]
        for p in per_model:
            p.pop("weight", None)
    elif shared_weight is not None:  # a gradient or filters: each model's own setting, the global one by default
        for p in per_model:
            p.setdefault("weight", shared_weight)
    input_params = per_model if any(per_model) else None
    return {"method": doc["merge_method"], "inputs": [str(m["model"]) for m in entries], "base": base,
            "weights": weights, "params": params, "input_params": input_params, "dtype": str(doc.get("dtype") or "")}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_mergekit_yaml(recipe: dict[str, Any], known: set[str] | None = None) -> str:
    """A recipe (as stored in a merged revision's lineage) as mergekit YAML. ``known``: the method names
    mergekit runs (the hub's list of them, say); read from mergekit's registry when not given."""
    method = recipe.get("method")
    if not method:
        raise InvalidInputError("this revision has no merge recipe")
    if known is None:
        from mergekit import merge_methods

        known = {m.spec.name for m in merge_methods.registered_methods()} | set(INTO_MERGEKIT)
    if method not in known:
        raise InvalidInputError(f"mergekit has no method {method!r}; the recipe stays deltahub's own (show --json)")
    inputs = recipe["inputs"]
    weights = recipe.get("weights")
    own = recipe.get("input_params") or [{}] * len(inputs)
    models = [{"model": spec, "parameters": dict(p)} for spec, p in zip(inputs, own)]
    shared = {name: value for name, value in (recipe.get("params") or {}).items() if value is not None}
    for i, m in enumerate(models):
        m["parameters"].setdefault("weight", float(weights[i]) if weights else 1.0)
    doc = {"merge_method": method, "base_model": recipe["base"], "models": models,
           "dtype": recipe.get("dtype") or "float32"}
    if shared:
        doc["parameters"] = shared
    return yaml.safe_dump(doc, sort_keys=False)

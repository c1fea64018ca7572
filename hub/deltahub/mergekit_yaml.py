"""mergekit YAML in and out.

In: a mergekit merge configuration (``merge_method``, ``base_model``,
``models`` with per-model ``parameters``, global ``parameters``) whose model
names are hub revisions (``namespace/name[@ref]``) becomes a merge request.
The document is checked against mergekit's own schema first. Per-model
``weight`` becomes the input weights; other per-model parameters become
per-input lists. ``slices`` and ``tokenizer`` options are refused: deltahub
merges whole models of one base; so are layer gradients (a list value) and
per-tensor ``filter`` lists, which would otherwise be misread as one value.

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
        raise InvalidInputError(f"mergekit options {unsupported} are not supported; merges here are of whole models")
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
    _check_scalars("parameters", doc.get("parameters") or {})
    for m in models:
        _check_scalars(f"parameters of model {m.get('model')}", m.get("parameters") or {})
    base = str(doc.get("base_model") or "")
    entries = [m for m in models if str(m.get("model")) != base]  # mergekit lists the base among models at times
    if not entries:
        raise InvalidInputError("the recipe lists no model to merge besides the base")
    per_model = [dict(m.get("parameters") or {}) for m in entries]
    weights = None
    if any("weight" in p for p in per_model):
        weights = [p.pop("weight", 1.0) for p in per_model]
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
            raise InvalidInputError(f"model weights must be numbers, not {weights}")
        weights = [float(w) for w in weights]
    params: dict[str, Any] = dict(doc.get("parameters") or {})
    for name in sorted({k for p in per_model for k in p}):
        params[name] = [p.get(name, params.get(name)) for p in per_model]
    return {"method": doc["merge_method"], "inputs": [str(m["model"]) for m in entries], "base": base,
            "weights": weights, "params": params, "dtype": str(doc.get("dtype") or "")}


def _check_scalars(where: str, params: dict[str, Any]) -> None:
    """mergekit reads a list as a gradient over layers and a list of {filter, value} as per-tensor values;
    deltahub takes one value per model for every tensor, so those forms are refused, not misread."""
    for name, value in params.items():
        if isinstance(value, (list, dict)):
            form = ("a per-tensor filter list" if isinstance(value, dict) or any(isinstance(v, dict) for v in value)
                    else "a gradient over layers")
            raise InvalidInputError(
                f"{where}: {name}={value!r} is {form}, which deltahub does not merge yet; give one number "
                f"(e.g. {name}: {_first_number(value)}), or run the config with `deltahub mergekit-yaml` on local folders")


def _first_number(value: Any) -> Any:
    if isinstance(value, dict):
        return _first_number(value.get("value", 0.5))
    if isinstance(value, list) and value:
        return _first_number(value[0])
    return value if isinstance(value, (int, float)) else 0.5


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
    shared, models = {}, [{"model": spec, "parameters": {}} for spec in inputs]
    for name, value in (recipe.get("params") or {}).items():
        if isinstance(value, list):
            for m, v in zip(models, value):
                m["parameters"][name] = v
        elif value is not None:
            shared[name] = value
    for i, m in enumerate(models):
        m["parameters"]["weight"] = float(weights[i]) if weights else 1.0
    doc = {"merge_method": method, "base_model": recipe["base"], "models": models,
           "dtype": recipe.get("dtype") or "float32"}
    if shared:
        doc["parameters"] = shared
    return yaml.safe_dump(doc, sort_keys=False)

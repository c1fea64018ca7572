"""Assembly: from a query (or an explicit adapter list) to a merged revision.

Route the query, turn the chosen adapters and their weights into a merge
request and let the merge engine build it once: its recipe hash is the cache
key, its per-recipe lock makes concurrent identical requests wait for the one
build, and a recipe built before comes back at once (``cached``).

Choices:
- default method ``linear`` with the routing weights, output form
  ``adapter``: a weighted sum of LoRA deltas, exact in LoRA space (factors
  concatenated, rank = sum of ranks), which is LoraRetriever's parameter
  fusion of the retrieved adapters. Any registered method can be named;
  the routing weights go to methods that mix by weight, not to those that
  compute their own (recall, greedy_soup) or select per entry (magmax).
  Explicit weights (with an explicit adapter list) go to any method that
  takes weights.
- weights are rounded to 4 decimals before they enter the recipe, so the same
  query embedded alone or in a batch (last-bit differences) hits one cache
  entry.
- the output is named ``assembled/<first 16 hex of the recipe hash>`` unless
  the request names one, so equal recipes share a name too.
- when no adapter fits (all below the minimum score), nothing is merged: the
  answer names the base to serve.
- form ``arrow`` merges nothing: it stores the chosen adapters side by side
  with an ``arrow_config.json`` (``deltahub.formats.mixture``), which peft's
  ``create_arrow_model`` turns into a token-level Arrow router over them
  (Ostapenko et al. 2024). Parameters ``top_k`` (default min(3, experts)) and
  ``router_temperature`` (1.0, peft's default). The files are the adapters'
  own blobs: no tensor is copied. Cached by recipe like a merge.
- assembled outputs carry the label ``assembled=true`` and are not routed
  themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import json

from deltahub.artifacts import FileEntry, Kind, Lineage, Revision
from deltahub.errors import InvalidInputError, PreconditionError
from deltahub.formats.adapter import CONFIG_FILE, WEIGHTS_FILE
from deltahub.formats.mixture import MIXTURE_FILE
from deltahub.merging.recipe import Recipe
from deltahub.names import ArtifactName
from deltahub.store import CommitRequest
from deltahub.builds import Progress
from deltahub.jobs.specs import MergeSpec
from deltahub.merge_engine import MergeEngine, MergeRequest
from deltahub.merging import MERGE_METHODS
from deltahub.routing.results import Assembly, Routed
from deltahub.routing.router import DEFAULT_K, ROUTED_KINDS, RouteRequest, Router

DEFAULT_METHOD = "linear"
DEFAULT_FORM = "adapter"
DEFAULT_NAMESPACE = "assembled"
ARROW_FORM = "arrow"
WEIGHT_DECIMALS = 4


@dataclass
class AssembleRequest:
    query: str = ""
    adapters: list[str] = field(default_factory=list)     # skip routing: these revisions
    weights: list[float] | None = None                    # with these weights (default: equal)
    route: RouteRequest | None = None                     # k, filters, temperature, min score, scoring
    method: str = DEFAULT_METHOD
    form: str = DEFAULT_FORM
    params: dict[str, Any] = field(default_factory=dict)
    rank: int | None = None
    energy: float | None = None
    out: str = ""
    created_by: str = ""


class Assembler:
    def __init__(self, router: Router, engine: MergeEngine) -> None:
        self.router = router
        self.engine = engine

    def plan(self, req: AssembleRequest, *, namespaces: frozenset[str] | None = None) -> tuple[Assembly, MergeRequest | None, Any]:
        """Routes and checks everything; returns the answer so far, the merge request and its resolution."""
        method = MERGE_METHODS.get(req.method)
        chosen, base = self._choose(req, namespaces)
        if not chosen[0]:
            return Assembly((), method.spec.name, req.form, base, reason=chosen[1]), None, None
        adapters = chosen[0]
        use = method.spec.takes_weights and (method.spec.mixes_by_weight or req.weights is not None)
        weights = [round(a.weight, WEIGHT_DECIMALS) for a in adapters] if use else None
        merge = MergeRequest(
            method=method.spec.name, inputs=[a.spec for a in adapters], out=req.out or f"{DEFAULT_NAMESPACE}/pending",
            base=base, weights=weights, params=dict(req.params), form=req.form, rank=req.rank, energy=req.energy,
            created_by=req.created_by,
            labels={"assembled": "true"},
        )
        resolved = self.engine.resolve(merge)
        if not req.out:
            merge.out = f"{DEFAULT_NAMESPACE}/{resolved.recipe.hash[:16]}"
        answer = Assembly(adapters, method.spec.name, req.form, resolved.base.spec, recipe_hash=resolved.recipe.hash)
        return answer, merge, resolved

    def prepare(self, req: AssembleRequest, *, namespaces: frozenset[str] | None = None
                ) -> tuple[Assembly, MergeSpec | None]:
        """The answer when there is nothing to build (no adapter fits, an Arrow mixture, a recipe built
        before); else the answer so far and the spec of the merge job that builds it."""
        if req.form == ARROW_FORM:
            return self._arrow(req, namespaces), None
        answer, merge, resolved = self.plan(req, namespaces=namespaces)
        if merge is None:
            return answer, None
        spec = self.engine.spec(merge, resolved)
        cached = self.engine.cached(spec)
        return (self.built(answer, cached), None) if cached is not None else (answer, spec)

    @staticmethod
    def built(answer: Assembly, result) -> Assembly:
        """The answer, with the merged revision (a MergeResult, or a merge job's result dict)."""
        doc = result if isinstance(result, dict) else result.to_dict()
        return replace(answer, artifact=doc["artifact"], digest=doc["digest"], cached=bool(doc.get("cached")),
                       recipe_hash=doc.get("recipe_hash", answer.recipe_hash))

    def assemble(self, req: AssembleRequest, *, namespaces: frozenset[str] | None = None,
                 progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> Assembly:
        """Everything in this process (library use); the server runs the build as an ``assemble`` job."""
        answer, spec = self.prepare(req, namespaces=namespaces)
        if spec is None:
            return answer
        result = self.engine.once(spec.hash, lambda where: self.engine.cached(spec),
                                  lambda: self.engine.build_here(spec, progress=progress, cancelled=cancelled))
        return self.built(answer, result)

    def _arrow(self, req: AssembleRequest, namespaces) -> Assembly:
        if req.method not in (DEFAULT_METHOD, ARROW_FORM):
            raise InvalidInputError(f"form {ARROW_FORM} is a routed mixture, not a merge: give no method")
        unknown = set(req.params) - {"top_k", "router_temperature"}
        if unknown:
            raise InvalidInputError(f"unknown Arrow parameter(s) {sorted(unknown)}; known: router_temperature, top_k")
        (adapters, reason), base = self._choose(req, namespaces)
        if not adapters:
            return Assembly((), ARROW_FORM, ARROW_FORM, base, reason=reason)
        store = self.engine.store
        revs = [store.resolve(a.spec) for a in adapters]
        for rev in revs:
            if rev.kind is not Kind.ADAPTER:
                raise InvalidInputError(f"{rev.spec} is a {rev.kind.value}; an Arrow mixture is made of LoRA adapters")
        bases = sorted({r.base for r in revs})
        if len(bases) != 1 or (base and store.resolve_base(base).spec != bases[0]):
            raise PreconditionError(f"adapters apply to bases {bases}; an Arrow mixture needs one base revision")
        try:
            params = {"top_k": int(req.params.get("top_k", min(3, len(revs)))),
                      "router_temperature": float(req.params.get("router_temperature", 1.0))}
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"Arrow parameters: {err}") from None
        recipe = Recipe(method=ARROW_FORM, inputs=tuple(r.spec for r in revs), base=bases[0], form=ARROW_FORM,
                        params=params)
        out = req.out or f"{DEFAULT_NAMESPACE}/{recipe.hash[:16]}"
        ArtifactName.parse(out)
        def reuse(where: tuple[str, str]) -> tuple[Revision, bool]:
            if where[0] == out:
                return store.catalog.get_revision(*where), True
            return self._commit_mixture(req, out, revs, adapters, params, recipe), True  # same blobs, new name

        rev, cached = self.engine.once(
            recipe.hash, reuse, lambda: (self._commit_mixture(req, out, revs, adapters, params, recipe), False))
        return Assembly(adapters, ARROW_FORM, ARROW_FORM, bases[0], rev.artifact, rev.digest, cached, recipe.hash)

    def _commit_mixture(self, req, out, revs, adapters, params, recipe) -> Revision:
        store = self.engine.store
        names = [f"task_{i}" for i in range(len(revs))]
        files = [FileEntry(f"{name}/{f.path}", f.sha256, f.size)
                 for name, rev in zip(names, revs) for f in rev.files if f.path in (CONFIG_FILE, WEIGHTS_FILE)]
        config = {"task_adapters": names, **params, "sources": [r.spec for r in revs],
                  "routing_weights": [a.weight for a in adapters]}
        sha, size = store.blobs.put_bytes(json.dumps(config, indent=2, sort_keys=True).encode())
        try:
            rev, _ = store.commit(CommitRequest(
                artifact=out, kind=Kind.ADAPTER, files=[*files, FileEntry(MIXTURE_FILE, sha, size)], base=recipe.base,
                labels={"assembled": "true", "mixture": ARROW_FORM}, created_by=req.created_by,
                lineage=Lineage(parents=(*recipe.inputs, recipe.base), recipe={**recipe.to_dict(), "hash": recipe.hash}),
                index_recipe=True,
            ))
        except BaseException:
            store.discard_unused([sha])  # the config blob alone, if no revision took it
            raise
        return rev

    def _choose(self, req: AssembleRequest, namespaces) -> tuple[tuple[tuple[Routed, ...], str], str]:
        """((adapters, reason when none), base spec)."""
        if req.adapters:
            if req.query:
                raise InvalidInputError("give a query or an adapter list, not both")
            return self._explicit(req), (req.route.base if req.route else "")
        if not req.query or not req.query.strip():
            raise InvalidInputError("give a query to route, or --adapters to merge")
        if req.weights is not None:
            raise InvalidInputError("weights go with an explicit adapter list; routed adapters get routing weights")
        route = req.route or RouteRequest([req.query], k=DEFAULT_K)
        route.queries = [req.query]
        answer = self.router.route(route, namespaces=namespaces)
        found = answer.routes[0]
        if found.serve_base:
            return ((), found.reason), route.base
        return (found.adapters, ""), route.base

    def _explicit(self, req: AssembleRequest) -> tuple[tuple[Routed, ...], str]:
        specs = list(dict.fromkeys(req.adapters))
        if len(specs) != len(req.adapters):
            raise InvalidInputError("an adapter is listed twice")
        weights = req.weights if req.weights is not None else [1.0 / len(specs)] * len(specs)
        if len(weights) != len(specs):
            raise InvalidInputError(f"{len(weights)} weight(s) for {len(specs)} adapter(s)")
        out = []
        for spec, w in zip(specs, weights):
            rev = self.engine.store.resolve(spec)
            if rev.kind.value not in ROUTED_KINDS:
                raise InvalidInputError(f"{spec} is a {rev.kind.value}; assemble adapters or task vectors")
            out.append(Routed(rev.artifact, rev.digest, 0.0, float(w)))
        return tuple(out), ""

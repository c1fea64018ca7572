"""The SDK's router verbs: route queries, assemble merged models, load them.

A mixin of :class:`deltahub_client.hub.Hub`, kept apart so each file holds one idea.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from deltahub.routing.results import Assembly, RouteAnswer
from deltahub_client import convert
from deltahub_client.errors import translated


class RouterVerbs:
    @translated
    def route(
        self,
        queries: str | Sequence[str],
        *,
        k: int | None = None,
        base: str | None = None,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        temperature: float | None = None,
        min_score: float | None = None,
        scoring: str | None = None,
    ) -> RouteAnswer:
        """The adapters that fit each query, best first, with weights.

        Args:
            queries: one text or several (embedded in one batch).
            k: adapters per query (default 3).
            base, namespace, labels: only adapters of this base revision / namespace / with these labels.
            temperature: softmax temperature of the weights (default 0.05).
            min_score: cosine below which a query gets no adapter (``serve_base``); the hub's embedder's
                default (0.2 for all-MiniLM-L6-v2) when omitted.
            scoring: ``samples`` (default: best-matching card samples) or ``centroid`` (LoraRetriever).
        Raises:
            InvalidInputError (empty query, k < 1, unknown scoring), NotFoundError (unknown base).
        """
        texts = [queries] if isinstance(queries, str) else list(queries)
        request = convert.route_request(texts, k=k, base=base, namespace=namespace, labels=labels,
                                        temperature=temperature, min_score=min_score, scoring=scoring)
        return convert.route_answer_from_pb(self._unary(self._router.Route, request))

    @translated
    def assemble(
        self,
        query: str | None = None,
        *,
        adapters: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        method: str = "linear",
        form: str = "adapter",
        params: dict[str, Any] | None = None,
        rank: int = 0,
        energy: float = 0.0,
        out: str | None = None,
        k: int | None = None,
        base: str | None = None,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        temperature: float | None = None,
        min_score: float | None = None,
        scoring: str | None = None,
    ) -> Assembly:
        """Routes ``query`` (or takes ``adapters``), merges the chosen adapters and returns the merged revision.

        Built once per recipe: the same adapters, weights and method return the
        cached revision (``cached``); concurrent identical calls wait for one build.

        Args:
            query: the text to route; or ``adapters`` (revisions) with optional ``weights`` (default equal).
            method: any merge method name (default ``linear``: exact in LoRA space).
            form: ``adapter`` (default), ``task_vector``, ``model``, or ``arrow`` (the chosen adapters
                side by side for peft's token-level Arrow router; params ``top_k``, ``router_temperature``).
            out: the output name (default ``assembled/<recipe hash prefix>``).
            The routing options are those of :meth:`route`.
        Raises:
            InvalidInputError, NotFoundError, PreconditionError (adapters of different bases).
        """
        request = convert.assemble_request(
            query, adapters=adapters, weights=weights, method=method, form=form, params=params, rank=rank,
            energy=energy, out=out, k=k, base=base, namespace=namespace, labels=labels, temperature=temperature,
            min_score=min_score, scoring=scoring)
        # a miss merges, which may take longer than a unary call's usual deadline
        return convert.assembly_from_pb(self._router.Assemble(request, timeout=None, metadata=self._metadata))

    def load_assembled(self, query: str | None = None, *, cache_dir: str | os.PathLike | None = None,
                       **assemble_kwargs):
        """Assembles, pulls and loads in one call: returns ``(model, Assembly)``.

        The model is the base loaded with ``transformers`` (``AutoModelForCausalLM``
        or ``AutoModelForSequenceClassification`` by its architecture) with the
        merged adapter applied by ``peft``; a merged ``model`` form loads as is;
        an ``arrow`` mixture through ``peft.create_arrow_model``; when no
        adapter fits, the base alone.
        """
        result = self.assemble(query, **assemble_kwargs)
        if cache_dir is not None:  # kept: the next call with the same folder downloads nothing again
            return self._load_assembled(result, Path(cache_dir)), result
        # no folder asked for: the files live while the model loads, then go (a loaded model holds its
        # weights; on Linux a mapped file stays readable until unmapped)
        with tempfile.TemporaryDirectory(prefix="deltahub-assembled-") as tmp:
            return self._load_assembled(result, Path(tmp)), result

    def _load_assembled(self, result: Assembly, root: Path):
        if not result.base:
            raise ValueError(f"no adapter fits and no base was given to serve: {result.reason}")
        base_dir = self.pull(result.base, root / "base")
        if result.serve_base:
            return _auto_model(base_dir).from_pretrained(base_dir)
        merged_dir = self.pull(result.spec, root / "merged")
        if (merged_dir / "arrow_config.json").exists():
            from peft import ArrowConfig, create_arrow_model

            config = json.loads((merged_dir / "arrow_config.json").read_text())
            experts = [str(merged_dir / name) for name in config["task_adapters"]]
            arrow = ArrowConfig(top_k=config["top_k"], router_temperature=config["router_temperature"])
            return create_arrow_model(_auto_model(base_dir).from_pretrained(base_dir), experts, arrow)
        if result.form == "model":
            return _auto_model(merged_dir).from_pretrained(merged_dir)
        if result.form != "adapter":
            raise ValueError(f"a {result.form} output is not loadable as a model; assemble with form='adapter'")
        from peft import PeftModel

        return PeftModel.from_pretrained(_auto_model(base_dir).from_pretrained(base_dir), merged_dir)

    @translated
    def router_status(self) -> dict[str, Any]:
        return convert.router_status_from_pb(self._unary(self._router.GetRouterStatus,
                                                         convert.router_status_request()))


def _auto_model(folder: Path):
    import transformers

    config = json.loads((Path(folder) / "config.json").read_text())
    archs = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return transformers.AutoModelForSequenceClassification
    if any(a.endswith("ForCausalLM") for a in archs):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel

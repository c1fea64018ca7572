"""``deltahub route`` and ``assemble``: the router from the command line."""

from __future__ import annotations

import click

from deltahub.errors import InvalidInputError
from deltahub_client.cli.app import comma_floats, hub_command, parse_pairs
from deltahub_client.cli.merge import FORMS


def _route_options(fn):
    for opt in reversed((
        click.option("--k", "k", type=int, default=None, help="Adapters per query (default 3)."),
        click.option("--base", default=None, help="Only adapters of this base: NAMESPACE/NAME[@REF]."),
        click.option("--namespace", default=None, help="Only adapters in this namespace."),
        click.option("--label", "labels", multiple=True, help="KEY=VALUE: only adapters with this label (repeatable)."),
        click.option("--temperature", type=float, default=None, help="Softmax temperature of the weights (default 0.05)."),
        click.option("--min-score", type=float, default=None,
                     help="Below this cosine no adapter is returned: serve the base (default: the embedder's, 0.2)."),
        click.option("--scoring", type=click.Choice(["samples", "centroid"]), default=None,
                     help="samples (default): best-matching card samples; centroid: LoraRetriever's mean."),
    )):
        fn = opt(fn)
    return fn


def _adapter_lines(adapters) -> list[str]:
    return [f"  {a.weight:6.3f}  {a.artifact}@{a.digest[:12]}  (score {a.score:.3f})" for a in adapters]


@hub_command()
@click.argument("queries", nargs=-1, required=True)
@_route_options
def route(hub, ui, queries, k, base, namespace, labels, temperature, min_score, scoring):
    """Print the adapters that fit each QUERY, with scores and weights (or that none fits)."""
    result = hub.route(list(queries), k=k, base=base, namespace=namespace, labels=parse_pairs(labels),
                       temperature=temperature, min_score=min_score, scoring=scoring)
    lines = []
    for r in result.routes:
        lines.append(f"{r.query}")
        lines.extend(_adapter_lines(r.adapters) if r.adapters else [f"  no adapter: {r.reason}"])
    if result.unrouted_count:
        lines.append(f"({result.unrouted_count} adapter(s) not routable: {result.unrouted_reason})")
    ui.emit(result.to_dict(), "\n".join(lines))


@hub_command()
@click.argument("query", required=False)
@click.option("--adapters", default=None, help="A,B,...: merge these revisions instead of routing a query.")
@click.option("--weights", default=None, help="W1,W2,...: weights for --adapters (default equal).")
@click.option("--method", default="linear", show_default=True, help="Merge method (see `deltahub methods`).")
@click.option("--form", type=click.Choice([*FORMS, "arrow"]), default="adapter", show_default=True,
              help="What to store; arrow: the adapters side by side for peft's token-level Arrow router.")
@click.option("--param", "params", multiple=True, help="KEY=VALUE method parameter (repeatable).")
@click.option("--rank", type=int, default=0, help="Compress non-linear adapter outputs to this rank.")
@click.option("--energy", type=float, default=0.0, help="... or to this share of energy (0-1].")
@click.option("--out", default=None, help="NAMESPACE/NAME of the result (default assembled/<recipe hash>).")
@_route_options
def assemble(hub, ui, query, adapters, weights, method, form, params, rank, energy, out, k, base, namespace, labels,
             temperature, min_score, scoring):
    """Route QUERY (or take --adapters), merge the chosen adapters, print the merged revision."""
    if not query and not adapters:
        raise InvalidInputError("give a QUERY to route, or --adapters A,B,...")
    result = hub.assemble(
        query, adapters=[a for a in (adapters or "").split(",") if a] or None,
        weights=comma_floats(weights, "--weights"), method=method, form=form, params=parse_pairs(params, "--param"),
        rank=rank, energy=energy, out=out, k=k, base=base, namespace=namespace, labels=parse_pairs(labels),
        temperature=temperature, min_score=min_score, scoring=scoring)
    if result.serve_base:
        text = f"no adapter fits: {result.reason}\nserve the base: {result.base or '(give --base to name it)'}"
    else:
        text = "\n".join([f"{result.spec}  ({'cached' if result.cached else 'built'}; {result.method} -> {result.form})",
                          *_adapter_lines(result.adapters)])
    ui.emit(result.to_dict(), text)


@hub_command()
def router(hub, ui):
    """Show the router's embedder, index size and search kind."""
    s = hub.router_status()
    ui.emit(s, f"embedder {s['embedder']} (dim {s['dim']}), {s['indexed']} adapter(s) indexed, "
               f"{s['unrouted']} without a card, {s['search']} search" + (f"\nerror: {s['error']}" if s["error"] else ""))

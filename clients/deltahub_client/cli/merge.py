"""``deltahub merge``, ``methods``, ``eval`` and ``mergekit-yaml``: the merge engine from the command line."""

from __future__ import annotations

import click

from deltahub_client.cli.app import comma_floats, hub_command, load_card, main, parse_pairs
from deltahub_client.cli.text import job_doc

FORMS = ["model", "task_vector", "adapter"]


@hub_command(quiet_help="No progress bar.")
@click.argument("method", required=False)
@click.argument("inputs", nargs=-1)
@click.option("--recipe", "recipe_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A mergekit YAML configuration whose models are hub revisions (replaces METHOD and INPUTS).")
@click.option("--base", default=None, help="NAMESPACE/NAME[@REF] of the base model (inferred from adapters).")
@click.option("--out", required=True, help="NAMESPACE/NAME of the merged artifact.")
@click.option("--weights", default=None, help="W1,W2,...: one weight per input.")
@click.option("--param", "params", multiple=True, help="KEY=VALUE method parameter (repeatable).")
@click.option("--form", type=click.Choice(FORMS), default="model", show_default=True, help="What to store.")
@click.option("--eval", "--data", "data", default=None, help="Dataset revision (greedy_soup held-out data; recall texts).")
@click.option("--rank", type=int, default=0, help="Compress task_vector/adapter outputs to this rank.")
@click.option("--energy", type=float, default=0.0, help="... or to this share of energy (0-1].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--max-error", type=float, default=None,
              help="Largest relative error one parameter may have where the result approximates the merged delta "
                   "(default 0.01; 1 allows any).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="How a model output is stored (default: the base's dtypes; a --recipe's own dtype).")
@click.option("--card", "card_file", type=click.Path(dir_okay=False), default=None, help="Domain card (JSON/YAML).")
@click.option("--tag", "tags", multiple=True, help="Extra ref(s) to point at the result.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE label (repeatable).")
@click.option("--key", "idempotency_key", default=None,
              help="Idempotency key: a repeated merge is one job; another request with it is refused.")
@click.option("--no-wait", is_flag=True, help="Print the job id and return at once (follow: deltahub jobs watch ID).")
def merge(hub, ui, method, inputs, recipe_file, base, out, weights, params, form, data, rank, energy, device, max_error,
          dtype, card_file, tags, labels, idempotency_key, no_wait):
    """Merge stored models, task vectors or adapters: METHOD INPUT... (see `deltahub methods`)."""
    if recipe_file and (method or inputs):
        raise click.UsageError("give either --recipe FILE or METHOD INPUT..., not both")
    if not recipe_file and not (method and inputs):
        raise click.UsageError("give METHOD and at least one INPUT (or --recipe FILE)")
    options = dict(out=out, form=form, data=data, rank=rank, energy=energy, device=device, tags=tags, max_error=max_error,
                   **({"dtype": dtype} if dtype else {}),
                   card=load_card(card_file), labels=parse_pairs(labels), idempotency_key=idempotency_key,
                   wait=not no_wait)
    if recipe_file:
        result = hub.merge_recipe(recipe_file, **options)
    else:
        result = hub.merge(method, list(inputs), base=base, weights=comma_floats(weights, "--weights"),
                           params=parse_pairs(params, "--param"), **options)
    if no_wait:
        ui.emit(job_doc(result), result.id if not result.finished
              else f"{result.id} ({result.state.lower()}: {result.result.get('artifact', '')})")
        return
    rev = result.revision
    doc = {"revision": rev.to_dict(), "cached": result.cached, "recipe_hash": result.recipe_hash,
           "metrics": result.metrics, "job": result.job}
    where = "from cache" if result.cached else "built"
    err = result.metrics.get("relative_error")
    text = f"{rev.artifact}@{rev.digest} ({rev.kind.value}, {where})"
    if err:
        text += f"\n  relative error of the stored form: {err:.4g}"
    worst = (result.metrics.get("parameter_errors") or [])[:5]
    if worst:
        text += "\n  largest per parameter: " + ", ".join(f"{name} {e:.3g}" for name, e in worst)
    ui.emit(doc, text)


@hub_command()
def methods(hub, ui):
    """List the merge methods the hub knows, with their papers and parameters."""
    found = hub.merge_methods()
    lines = []
    for m in found:
        params = ", ".join(f"{p['name']}={p['default']}" for p in m["params"])
        lines.append(f"{m['name']:<20} {m['source']:<9} {m['title']}" + (f"  [{params}]" if params else ""))
    ui.emit(found, "\n".join(lines))


@hub_command("eval")
@click.argument("target")
@click.option("--data", "--eval", "data", required=True, help="Dataset revision to evaluate on.")
@click.option("--device", default="auto", show_default=True)
def evaluate(hub, ui, target, data, device):
    """The held-out metric of a model, adapter or task vector (what greedy_soup uses)."""
    r = hub.evaluate(target, data, device=device)
    doc = {k: v for k, v in vars(r).items() if v is not None}
    if r.metric == "accuracy":
        text = f"{r.target} on {r.data}: accuracy {r.accuracy:.4f} over {r.samples} rows"
    else:
        text = f"{r.target} on {r.data}: loss {r.loss:.4f}, perplexity {r.perplexity:.3f} over {r.samples} rows"
    ui.emit(doc, text)


@main.command("mergekit-yaml", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                 "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def mergekit_yaml(args):
    """mergekit's own `mergekit-yaml CONFIG OUT [OPTIONS]` on local folders, with deltahub's methods
    (magmax, instruction_vector, ...) registered in mergekit's registry first. Options are mergekit's."""
    import deltahub.merging  # noqa: F401 - registers deltahub's methods into mergekit's registry
    from mergekit.scripts.run_yaml import main as run_yaml

    run_yaml.main(args=list(args), prog_name="deltahub mergekit-yaml")

"""``deltahub push``, ``pull``, ``ls``, ``show``, ``tag``, ``rm``, ``card``, ``task-vector``, ``import-hf``,
``export-hf``, ``watch-refs``, ``gc`` and ``health``: artifacts and revisions from the command line."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click

from deltahub.artifacts import Lineage
from deltahub.errors import NotFoundError
from deltahub.names import RevisionSpec, looks_like_digest
from deltahub_client.cli.app import hub_command, load_card, parse_pairs
from deltahub_client.cli.text import artifact_row, revision_text, size

KINDS = ["model", "adapter", "task_vector", "dataset"]


@hub_command(quiet_help="No progress bars.")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("artifact")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--base", default=None, help="NAMESPACE/NAME[@REF] of the base model (adapters, task vectors).")
@click.option("--card", "card_file", type=click.Path(dir_okay=False), default=None,
              help="Domain card: JSON or YAML with description and samples.")
@click.option("--tag", "tags", multiple=True, help="Extra ref(s) to point at the new revision.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE label (repeatable).")
@click.option("--parent", "parents", multiple=True,
              help="Lineage parent revision (repeatable), e.g. the training dataset: it stands in for a missing card.")
@click.option("--ref", default="main", show_default=True, help="Ref to move to the new revision.")
@click.option("--expect", "expected", default=None, help="Compare-and-swap: the revision REF must point to now ('' = new).")
@click.option("--allow-code", is_flag=True,
              help="Accept code files (.py, ...) that trust_remote_code would run; recorded on the revision.")
@click.option("--base-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="A local copy of the base model (e.g. a Hugging Face cache snapshot): files are sent as deltas against it.")
def push(hub, ui, folder, artifact, kind, base, card_file, tags, labels, parents, ref, expected, allow_code, base_dir):
    """Push FOLDER as a new revision of ARTIFACT (namespace/name)."""
    result = hub.push(folder, artifact, kind=kind, base=base, card=load_card(card_file),
                      labels=parse_pairs(labels), ref=ref, tags=list(tags), expected_revision=expected,
                      lineage=Lineage(parents=tuple(parents)) if parents else None, allow_code=allow_code,
                      base_dir=base_dir)
    rev = result.revision
    ui.emit({"revision": rev.to_dict(), "created": result.created, "blobs_sent": result.blobs_sent,
             "bytes_sent": result.bytes_sent},
            f"{'committed' if result.created else 'unchanged files:'} {rev.artifact}@{rev.digest} "
            f"{'' if result.created or not (card_file or labels) else '(card and labels updated) '}"
            f"({ref} -> {rev.digest[:12]}; sent {result.blobs_sent} blob(s), {size(result.bytes_sent)})")


@hub_command(quiet_help="No progress bar and no summary (errors still go to stderr).")
@click.argument("spec")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Replace files in DEST that differ from the revision's.")
@click.option("--base-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="A local copy of the base model (e.g. a Hugging Face cache snapshot): files the hub stores as deltas arrive as deltas against it.")
def pull(hub, ui, spec, dest, force, base_dir):
    """Download NAMESPACE/NAME[@REF_OR_DIGEST] into DEST (verified by sha256)."""
    rev = hub.show(spec)
    path = hub.download(rev, dest, overwrite=force, base_dir=base_dir)
    if not ui.quiet or ui.json:
        ui.emit({"revision": rev.to_dict(), "path": str(path)}, f"pulled {rev.artifact}@{rev.digest} into {path}")


@hub_command("ls")
@click.argument("namespace", required=False)
@click.option("--kind", type=click.Choice(KINDS), default=None)
def ls(hub, ui, namespace, kind):
    """List artifacts (of one NAMESPACE)."""
    found = hub.list_artifacts(namespace, kind=kind)
    ui.emit([a.to_dict() for a in found], "\n".join(artifact_row(a) for a in found) or "no artifacts")


@hub_command()
@click.argument("spec")
@click.option("--revisions", "all_revisions", is_flag=True, help="List every revision of the artifact.")
@click.option("--recipe", is_flag=True, help="Print a merged revision's recipe as mergekit YAML.")
def show(hub, ui, spec, all_revisions, recipe):
    """Show a revision: metadata, files, lineage (NAMESPACE/NAME[@REF])."""
    if recipe:
        text = hub.recipe_yaml(spec)
        ui.emit({"recipe_yaml": text}, text.rstrip())
        return
    if all_revisions:
        revs = hub.revisions(str(RevisionSpec.parse(spec).artifact))
        ui.emit([r.to_dict() for r in revs], "\n\n".join(revision_text(r) for r in revs))
        return
    rev = hub.show(spec)
    ui.emit(rev.to_dict(), revision_text(rev))


@hub_command()
@click.argument("artifact")
@click.argument("tag")
@click.option("--revision", default="main", show_default=True, help="Ref or digest to point TAG at.")
@click.option("--expect", "expected", default=None, help="Compare-and-swap: where TAG must point now ('' = new).")
@click.option("--delete", is_flag=True, help="Delete TAG instead.")
def tag(hub, ui, artifact, tag, revision, expected, delete):
    """Create, move (compare-and-swap with --expect) or --delete a ref of ARTIFACT."""
    if delete:
        digest = hub.delete_ref(artifact, tag, expected_revision=expected)
        ui.emit({"ref": tag, "deleted": digest}, f"deleted ref {tag} (was {digest[:12]})")
        return
    digest, previous = hub.tag(artifact, tag, revision, expected_revision=expected)
    ui.emit({"ref": tag, "digest": digest, "previous": previous},
            f"{tag} -> {digest[:12]}" + (f" (was {previous[:12]})" if previous else " (new)"))


@hub_command()
@click.argument("spec")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting a whole artifact.")
def rm(hub, ui, spec, yes):
    """Delete a ref (NS/NAME@REF), a revision (NS/NAME@DIGEST) or a whole artifact (NS/NAME).

    Blobs that no remaining revision uses are collected.
    """
    parsed = RevisionSpec.parse(spec)
    artifact = str(parsed.artifact)
    if parsed.revision:
        refs = hub.artifact(artifact).refs
        if parsed.revision in refs:
            digest = hub.delete_ref(artifact, parsed.revision)
            ui.emit({"deleted_refs": [parsed.revision], "digest": digest},
                    f"deleted ref {parsed.revision} of {artifact} (was {digest[:12]})")
            return
        if not looks_like_digest(parsed.revision):
            raise NotFoundError(f"{artifact} has no ref {parsed.revision!r}")
        result = hub.delete_revision(artifact, parsed.revision)
    else:
        if not yes and not ui.json:
            click.confirm(f"delete {artifact} with all its revisions and refs?", abort=True)
        result = hub.delete_artifact(artifact)
    ui.emit(result.__dict__,
            f"deleted {len(result.deleted_revisions)} revision(s), {len(result.deleted_refs)} ref(s); "
            f"freed {result.blobs_removed} blob(s), {size(result.bytes_freed)}")


@hub_command()
@click.argument("spec")
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--label", "labels", multiple=True, help="KEY=VALUE (merged into the labels).")
@click.option("--replace-labels", is_flag=True)
def card(hub, ui, spec, card_file, labels, replace_labels):
    """Update the domain card and labels of a revision."""
    rev = hub.update_card(spec, card=load_card(card_file), labels=parse_pairs(labels),
                          replace_labels=replace_labels)
    ui.emit(rev.to_dict(), revision_text(rev))


@hub_command("task-vector")
@click.argument("finetuned")
@click.argument("base")
@click.option("--out", required=True, help="NAMESPACE/NAME of the task vector.")
@click.option("--rank", type=int, default=0, help="Factor 2-D deltas to this rank (SVD).")
@click.option("--energy", type=float, default=0.0, help="Or keep this share of each delta's energy.")
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), default=None)
def task_vector(hub, ui, finetuned, base, out, rank, energy, card_file):
    """Create a task vector FINETUNED - BASE on the hub, dense or low-rank."""
    result = hub.create_task_vector(finetuned, base, out, rank=rank, energy=energy, card=load_card(card_file))
    rev = result.revision
    ui.emit({"revision": rev.to_dict(), "created": result.created, "relative_error": result.relative_error},
            f"{'committed' if result.created else 'unchanged files:'} {rev.artifact}@{rev.digest} "
            f"{'' if result.created or not card_file else '(card updated) '}"
            f"(relative error {result.relative_error:.3e})")


@hub_command("import-hf", quiet_help="No progress bars.")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.argument("artifact")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--repo-id", default=None, help="With SOURCE a Hugging Face cache folder: the repo to import.")
@click.option("--revision", default=None, help="Cache ref or commit (default main).")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model")
@click.option("--base", default=None)
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), default=None)
def import_hf(hub, ui, source, artifact, kind, repo_id, revision, repo_type, base, card_file):
    """Push a Hugging Face snapshot (a snapshot folder, or a cache folder with --repo-id)."""
    result = hub.import_hf(source, artifact, kind=kind, repo_id=repo_id, revision=revision, repo_type=repo_type,
                           base=base, card=load_card(card_file))
    rev = result.revision
    ui.emit({"revision": rev.to_dict(), "created": result.created},
            f"imported {rev.artifact}@{rev.digest}")


@hub_command("export-hf", quiet_help="No progress bars.")
@click.argument("spec")
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--repo-id", default=None, help="Repo id in the cache (default: the artifact name).")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model")
def export_hf(hub, ui, spec, cache_dir, repo_id, repo_type):
    """Write a revision into a Hugging Face cache folder (huggingface_hub finds it offline)."""
    snapshot = hub.export_hf(spec, cache_dir, repo_id=repo_id, repo_type=repo_type)
    ui.emit({"snapshot": str(snapshot)}, f"exported to {snapshot}")


@hub_command()
@click.option("--max-partial-age", type=float, default=0.0, help="Seconds; partial uploads older are removed.")
def gc(hub, ui, max_partial_age):
    """Remove blobs no revision uses and stale partial uploads (admin)."""
    result = hub.collect_garbage(partial_upload_max_age_s=max_partial_age)
    ui.emit(result, ", ".join(f"{k}={v}" for k, v in result.items()))


@hub_command()
def health(hub, ui):
    """Check that the hub answers."""
    status = hub.health()
    ui.emit({"address": hub.address, "status": status}, f"{hub.address}: {status}")


@hub_command("watch-refs")
@click.argument("namespace", required=False)
@click.option("--artifact", default=None, help="Only this artifact's refs (NAMESPACE/NAME).")
@click.option("--after", type=int, default=0, help="Resume after this event seq (0: from now).")
@click.option("--count", type=int, default=0, help="Exit after this many events (0: run until stopped).")
def watch_refs(hub, ui, namespace, artifact, after, count):
    """Print every ref move (and deletion) as it happens: one line, or one JSON object, per event."""
    for i, move in enumerate(hub.watch_refs(namespace, artifact=artifact, after=after), start=1):
        if ui.json:
            click.echo(json.dumps(asdict(move), sort_keys=True), nl=True)
        else:
            where = "deleted" if move.deleted else move.digest
            click.echo(f"{move.seq}  {move.artifact}@{move.ref} -> {where}")
        sys.stdout.flush()
        if count and i >= count:
            return

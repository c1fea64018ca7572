"""The ``deltahub`` command line, built on the SDK.

Every command that prints results takes ``--json``. Errors print the hub's
message on stderr and exit 1 (2 for usage errors, as click does).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click
import yaml

from deltahub.artifacts import ArtifactInfo, DomainCard, Lineage, Revision
from deltahub.errors import DeltahubError, InvalidInputError, NotFoundError
from deltahub.names import RevisionSpec, looks_like_digest
from deltahub import limits
from deltahub_client.channel import TLSOptions
from deltahub_client.hub import Hub

KINDS = ["model", "adapter", "task_vector", "dataset"]


def _hub_options(fn, *, root: bool = False):
    # Only the root reads the environment, so an explicit flag anywhere wins over it.
    fn = click.option("--hub", "hub_address", envvar="DELTAHUB_ADDRESS" if root else None, default=None,
                      help="HOST:PORT of the hub (DELTAHUB_ADDRESS).")(fn)
    fn = click.option("--token", envvar="DELTAHUB_TOKEN" if root else None, default=None,
                      help="Bearer token (DELTAHUB_TOKEN).")(fn)
    return fn


def _limit_options(fn):
    """One flag per declared limit (deltahub.limits), with its default and help."""
    for _, f in reversed(list(limits.declared())):
        kind = int if f.type in (int, "int") else float
        fn = click.option(f.metadata["flag"], f.name, type=kind, default=f.default, show_default=True,
                          help=f.metadata["help"])(fn)
    return fn


def _json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def _tls_options(fn):
    fn = click.option("--tls-ca", envvar="DELTAHUB_TLS_CA", default=None, type=click.Path(dir_okay=False),
                      help="PEM CA that signed the hub's certificate; turns TLS on (DELTAHUB_TLS_CA).")(fn)
    fn = click.option("--tls/--no-tls", "tls", envvar="DELTAHUB_TLS", default=None,
                      help="TLS verified by the system's roots (DELTAHUB_TLS=1); on by itself with --tls-ca.")(fn)
    fn = click.option("--tls-cert", envvar="DELTAHUB_TLS_CERT", default=None, type=click.Path(dir_okay=False),
                      help="Client certificate for a hub that asks for one (mutual TLS).")(fn)
    fn = click.option("--tls-key", envvar="DELTAHUB_TLS_KEY", default=None, type=click.Path(dir_okay=False),
                      help="The client certificate's key.")(fn)
    fn = click.option("--tls-server-name", envvar="DELTAHUB_TLS_SERVER_NAME", default=None,
                      help="Name to verify the hub's certificate against, when dialing it by another.")(fn)
    return fn


def _hub(ctx: click.Context, hub_address: str | None, token: str | None, *, quiet: bool = False) -> Hub:
    root = ctx.find_root().params
    tls = TLSOptions(root.get("tls"), root.get("tls_ca"), root.get("tls_cert"), root.get("tls_key"),
                     root.get("tls_server_name"))
    return Hub(hub_address or root.get("hub_address"), token if token is not None else root.get("token"),
               progress=not quiet, tls=tls)


def _emit(as_json: bool, doc, text: str) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True) if as_json else text)


def _load_card(path: str | None) -> DomainCard | None:
    if not path:
        return None
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InvalidInputError(f"card file {path}: {err}") from None
    return DomainCard.from_dict(doc)


def parse_pairs(items: list[str] | tuple[str, ...], what: str = "label") -> dict[str, str]:
    """KEY=VALUE options (labels, method parameters) as a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{what} {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _revision_text(rev: Revision) -> str:
    lines = [
        f"{rev.artifact}@{rev.digest}",
        f"  kind:     {rev.kind.value}",
        f"  refs:     {', '.join(rev.refs) or '-'}",
        f"  size:     {_size(rev.size)} in {len(rev.files)} file(s)",
    ]
    if rev.base:
        lines.append(f"  base:     {rev.base}")
    if rev.created_by:
        lines.append(f"  by:       {rev.created_by}")
    if rev.card:
        lines.append(f"  card:     {rev.card.description[:100]}")
        lines.append(f"            {len(rev.card.samples)} sample text(s)")
    if rev.labels:
        lines.append("  labels:   " + ", ".join(f"{k}={v}" for k, v in sorted(rev.labels.items())))
    if rev.lineage.parents:
        lines.append("  parents:  " + "\n            ".join(rev.lineage.parents))
    for what in ("recipe", "training", "metrics"):
        doc = getattr(rev.lineage, what)
        if doc:
            lines.append(f"  {what + ':':<9} {json.dumps(doc, sort_keys=True)}")
    lines.append("  files:")
    lines += [f"    {f.path}  {_size(f.size)}  sha256:{f.sha256[:16]}" for f in rev.files]
    return "\n".join(lines)


def _artifact_row(a: ArtifactInfo) -> str:
    refs = ", ".join(f"{r}={d[:12]}" for r, d in sorted(a.refs.items())) or "-"
    return f"{a.name:<40} {a.kind.value:<12} {a.revision_count:>4} rev  {_size(a.size):>9}  {refs}"


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeltahubError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@functools.partial(_hub_options, root=True)
@_tls_options
@click.version_option(package_name="deltahub")
def main(hub_address, token, tls, tls_ca, tls_cert, tls_key, tls_server_name):
    """deltahub: a model hub for weight deltas (adapters and task vectors)."""


@main.command()
@click.option("--data-dir", default="./data", show_default=True, type=click.Path(file_okay=False),
              help="Folder for blobs and the SQLite catalog.")
@click.option("--address", default="127.0.0.1:50051", show_default=True, help="HOST:PORT to listen on.")
@click.option("--redis", "redis_url", envvar="DELTAHUB_REDIS_URL", default=None,
              help="Redis URL for jobs, events and the merge cache (in-process when absent).")
@click.option("--tokens", "tokens_file", envvar="DELTAHUB_TOKENS_FILE", default=None,
              help="Token file (YAML/JSON); without one the hub is open, on loopback only.")
@click.option("--max-blob-bytes", type=int, default=64 << 30, show_default=True, help="Refuse files larger than this.")
@click.option("--max-revision-bytes", type=int, default=512 << 30, show_default=True,
              help="Refuse revisions larger than this.")
@click.option("--embedder", default="all-minilm-l6-v2", show_default=True,
              help="Router embedder (a registry name); changing it re-embeds the cards.")
@click.option("--workers", "local_workers", type=int, default=None,
              help="In-process workers, for every kind of job (default 2 without --redis; 0 with it: "
                   "run `deltahub worker`, and the hub computes no tensors).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="Device of the in-process workers.")
@click.option("--tls-cert", envvar="DELTAHUB_SERVER_TLS_CERT", type=click.Path(exists=True, dir_okay=False),
              default=None, help="PEM certificate chain: serve TLS (with --tls-key; DELTAHUB_SERVER_TLS_CERT).")
@click.option("--tls-key", envvar="DELTAHUB_SERVER_TLS_KEY", type=click.Path(exists=True, dir_okay=False),
              default=None, help="PEM private key (DELTAHUB_SERVER_TLS_KEY).")
@click.option("--tls-client-ca", envvar="DELTAHUB_SERVER_TLS_CLIENT_CA", type=click.Path(exists=True, dir_okay=False),
              default=None, help="PEM CA: require client certificates it signed (mutual TLS).")
@click.option("--insecure", envvar="DELTAHUB_INSECURE", is_flag=True,
              help="Allow tokens in plaintext off loopback (only behind a proxy that terminates TLS).")
@click.option("--rpc-threads", type=int, default=16, show_default=True,
              help="Threads for blocking calls (catalog, disk); streams waiting on clients hold none.")
@click.option("--heavy-threads", type=int, default=2, show_default=True,
              help="Threads for heavy calls (checking merges and jobs before they are queued, GC).")
@_limit_options
@click.option("--log-level", default="INFO", show_default=True)
def serve(data_dir, address, redis_url, tokens_file, max_blob_bytes, max_revision_bytes, embedder, local_workers,
          device, tls_cert, tls_key, tls_client_ca, insecure, rpc_threads, heavy_threads, log_level, **limit_values):
    """Run the hub server on its embedded defaults (blobs + SQLite under --data-dir)."""
    from deltahub.auth import TokenTable
    from deltahub_server import ServerConfig
    from deltahub_server import serve as run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    groups = limits.from_flags(limit_values)
    run(ServerConfig(data_dir=Path(data_dir), address=address, tokens=TokenTable.load(tokens_file),
                     redis_url=redis_url, max_blob_bytes=max_blob_bytes, max_revision_bytes=max_revision_bytes,
                     embedder=embedder, local_workers=local_workers, worker_device=device,
                     tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca, insecure=insecure,
                     workers=rpc_threads, heavy_workers=heavy_threads, streams=groups[limits.StreamLimits],
                     uploads=groups[limits.UploadLimits], inputs=groups[limits.InputLimits],
                     training_limits=groups[limits.TrainingLimits], jobs=groups[limits.JobLimits]))


@main.command()
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
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_hub_options
@_json_option
@click.pass_context
def push(ctx, folder, artifact, kind, base, card_file, tags, labels, parents, ref, expected, allow_code, quiet,
         hub_address, token, as_json):
    """Push FOLDER as a new revision of ARTIFACT (namespace/name)."""
    with _hub(ctx, hub_address, token, quiet=quiet or as_json) as hub:
        result = hub.push(folder, artifact, kind=kind, base=base, card=_load_card(card_file),
                          labels=parse_pairs(labels), ref=ref, tags=list(tags), expected_revision=expected,
                          lineage=Lineage(parents=tuple(parents)) if parents else None, allow_code=allow_code)
    rev = result.revision
    _emit(as_json, {"revision": rev.to_dict(), "created": result.created, "blobs_sent": result.blobs_sent,
                    "bytes_sent": result.bytes_sent},
          f"{'committed' if result.created else 'unchanged files:'} {rev.artifact}@{rev.digest} "
          f"{'' if result.created or not (card_file or labels) else '(card and labels updated) '}"
          f"({ref} -> {rev.digest[:12]}; sent {result.blobs_sent} blob(s), {_size(result.bytes_sent)})")


@main.command()
@click.argument("spec")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary (errors still go to stderr).")
@click.option("--force", is_flag=True, help="Replace files in DEST that differ from the revision's.")
@_hub_options
@_json_option
@click.pass_context
def pull(ctx, spec, dest, quiet, force, hub_address, token, as_json):
    """Download NAMESPACE/NAME[@REF_OR_DIGEST] into DEST (verified by sha256)."""
    with _hub(ctx, hub_address, token, quiet=quiet or as_json) as hub:
        rev = hub.show(spec)
        path = hub.download(rev, dest, overwrite=force)
    if not quiet or as_json:
        _emit(as_json, {"revision": rev.to_dict(), "path": str(path)}, f"pulled {rev.artifact}@{rev.digest} into {path}")


@main.command("ls")
@click.argument("namespace", required=False)
@click.option("--kind", type=click.Choice(KINDS), default=None)
@_hub_options
@_json_option
@click.pass_context
def ls(ctx, namespace, kind, hub_address, token, as_json):
    """List artifacts (of one NAMESPACE)."""
    with _hub(ctx, hub_address, token) as hub:
        found = hub.list_artifacts(namespace, kind=kind)
    _emit(as_json, [a.to_dict() for a in found], "\n".join(_artifact_row(a) for a in found) or "no artifacts")


@main.command()
@click.argument("spec")
@click.option("--revisions", "all_revisions", is_flag=True, help="List every revision of the artifact.")
@click.option("--recipe", is_flag=True, help="Print a merged revision's recipe as mergekit YAML.")
@_hub_options
@_json_option
@click.pass_context
def show(ctx, spec, all_revisions, recipe, hub_address, token, as_json):
    """Show a revision: metadata, files, lineage (NAMESPACE/NAME[@REF])."""
    with _hub(ctx, hub_address, token) as hub:
        if recipe:
            text = hub.recipe_yaml(spec)
            _emit(as_json, {"recipe_yaml": text}, text.rstrip())
            return
        if all_revisions:
            revs = hub.revisions(str(RevisionSpec.parse(spec).artifact))
            _emit(as_json, [r.to_dict() for r in revs], "\n\n".join(_revision_text(r) for r in revs))
            return
        rev = hub.show(spec)
    _emit(as_json, rev.to_dict(), _revision_text(rev))


@main.command()
@click.argument("artifact")
@click.argument("tag")
@click.option("--revision", default="main", show_default=True, help="Ref or digest to point TAG at.")
@click.option("--expect", "expected", default=None, help="Compare-and-swap: where TAG must point now ('' = new).")
@click.option("--delete", is_flag=True, help="Delete TAG instead.")
@_hub_options
@_json_option
@click.pass_context
def tag(ctx, artifact, tag, revision, expected, delete, hub_address, token, as_json):
    """Create, move (compare-and-swap with --expect) or --delete a ref of ARTIFACT."""
    with _hub(ctx, hub_address, token) as hub:
        if delete:
            digest = hub.delete_ref(artifact, tag, expected_revision=expected)
            _emit(as_json, {"ref": tag, "deleted": digest}, f"deleted ref {tag} (was {digest[:12]})")
            return
        digest, previous = hub.tag(artifact, tag, revision, expected_revision=expected)
    _emit(as_json, {"ref": tag, "digest": digest, "previous": previous},
          f"{tag} -> {digest[:12]}" + (f" (was {previous[:12]})" if previous else " (new)"))


@main.command()
@click.argument("spec")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting a whole artifact.")
@_hub_options
@_json_option
@click.pass_context
def rm(ctx, spec, yes, hub_address, token, as_json):
    """Delete a ref (NS/NAME@REF), a revision (NS/NAME@DIGEST) or a whole artifact (NS/NAME).

    Blobs that no remaining revision uses are collected.
    """
    parsed = RevisionSpec.parse(spec)
    artifact = str(parsed.artifact)
    with _hub(ctx, hub_address, token) as hub:
        if parsed.revision:
            refs = hub.artifact(artifact).refs
            if parsed.revision in refs:
                digest = hub.delete_ref(artifact, parsed.revision)
                _emit(as_json, {"deleted_refs": [parsed.revision], "digest": digest},
                      f"deleted ref {parsed.revision} of {artifact} (was {digest[:12]})")
                return
            if not looks_like_digest(parsed.revision):
                raise NotFoundError(f"{artifact} has no ref {parsed.revision!r}")
            result = hub.delete_revision(artifact, parsed.revision)
        else:
            if not yes and not as_json:
                click.confirm(f"delete {artifact} with all its revisions and refs?", abort=True)
            result = hub.delete_artifact(artifact)
    _emit(as_json, result.__dict__,
          f"deleted {len(result.deleted_revisions)} revision(s), {len(result.deleted_refs)} ref(s); "
          f"freed {result.blobs_removed} blob(s), {_size(result.bytes_freed)}")


@main.command()
@click.argument("spec")
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--label", "labels", multiple=True, help="KEY=VALUE (merged into the labels).")
@click.option("--replace-labels", is_flag=True)
@_hub_options
@_json_option
@click.pass_context
def card(ctx, spec, card_file, labels, replace_labels, hub_address, token, as_json):
    """Update the domain card and labels of a revision."""
    with _hub(ctx, hub_address, token) as hub:
        rev = hub.update_card(spec, card=_load_card(card_file), labels=parse_pairs(labels),
                              replace_labels=replace_labels)
    _emit(as_json, rev.to_dict(), _revision_text(rev))


@main.command("task-vector")
@click.argument("finetuned")
@click.argument("base")
@click.option("--out", required=True, help="NAMESPACE/NAME of the task vector.")
@click.option("--rank", type=int, default=0, help="Factor 2-D deltas to this rank (SVD).")
@click.option("--energy", type=float, default=0.0, help="Or keep this share of each delta's energy.")
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), default=None)
@_hub_options
@_json_option
@click.pass_context
def task_vector(ctx, finetuned, base, out, rank, energy, card_file, hub_address, token, as_json):
    """Create a task vector FINETUNED - BASE on the hub, dense or low-rank."""
    with _hub(ctx, hub_address, token) as hub:
        result = hub.create_task_vector(finetuned, base, out, rank=rank, energy=energy, card=_load_card(card_file))
    rev = result.revision
    _emit(as_json, {"revision": rev.to_dict(), "created": result.created, "relative_error": result.relative_error},
          f"{'committed' if result.created else 'unchanged files:'} {rev.artifact}@{rev.digest} "
          f"{'' if result.created or not (card_file or labels) else '(card and labels updated) '}"
          f"(relative error {result.relative_error:.3e})")


@main.command("import-hf")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.argument("artifact")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--repo-id", default=None, help="With SOURCE a Hugging Face cache folder: the repo to import.")
@click.option("--revision", default=None, help="Cache ref or commit (default main).")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model")
@click.option("--base", default=None)
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--quiet", "-q", is_flag=True)
@_hub_options
@_json_option
@click.pass_context
def import_hf(ctx, source, artifact, kind, repo_id, revision, repo_type, base, card_file, quiet, hub_address, token,
              as_json):
    """Push a Hugging Face snapshot (a snapshot folder, or a cache folder with --repo-id)."""
    with _hub(ctx, hub_address, token, quiet=quiet or as_json) as hub:
        result = hub.import_hf(source, artifact, kind=kind, repo_id=repo_id, revision=revision, repo_type=repo_type,
                               base=base, card=_load_card(card_file))
    rev = result.revision
    _emit(as_json, {"revision": rev.to_dict(), "created": result.created},
          f"imported {rev.artifact}@{rev.digest}")


@main.command("export-hf")
@click.argument("spec")
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--repo-id", default=None, help="Repo id in the cache (default: the artifact name).")
@click.option("--repo-type", type=click.Choice(["model", "dataset"]), default="model")
@click.option("--quiet", "-q", is_flag=True)
@_hub_options
@_json_option
@click.pass_context
def export_hf(ctx, spec, cache_dir, repo_id, repo_type, quiet, hub_address, token, as_json):
    """Write a revision into a Hugging Face cache folder (huggingface_hub finds it offline)."""
    with _hub(ctx, hub_address, token, quiet=quiet or as_json) as hub:
        snapshot = hub.export_hf(spec, cache_dir, repo_id=repo_id, repo_type=repo_type)
    _emit(as_json, {"snapshot": str(snapshot)}, f"exported to {snapshot}")


@main.command()
@click.option("--max-partial-age", type=float, default=0.0, help="Seconds; partial uploads older are removed.")
@_hub_options
@_json_option
@click.pass_context
def gc(ctx, max_partial_age, hub_address, token, as_json):
    """Remove blobs no revision uses and stale partial uploads (admin)."""
    with _hub(ctx, hub_address, token) as hub:
        result = hub.collect_garbage(partial_upload_max_age_s=max_partial_age)
    _emit(as_json, result, ", ".join(f"{k}={v}" for k, v in result.items()))


@main.command()
@_hub_options
@_json_option
@click.pass_context
def health(ctx, hub_address, token, as_json):
    """Check that the hub answers."""
    with _hub(ctx, hub_address, token) as hub:
        status = hub.health()
    _emit(as_json, {"address": hub.address, "status": status}, f"{hub.address}: {status}")


# The merge commands live in their own module; importing it registers them on ``main``.
from deltahub_client import cli_jobs, cli_merge, cli_route, cli_train  # noqa: E402,F401

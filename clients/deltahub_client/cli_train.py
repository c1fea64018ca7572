"""``deltahub train``, ``jobs`` and ``worker``: training from the command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

import click
import yaml

from deltahub.errors import InvalidInputError
from deltahub.jobs import SUCCEEDED
from deltahub_client.cli import _emit, _hub, _hub_options, _json_option, _load_card, main, parse_pairs


def _value(text: str):
    """--set values are YAML scalars or lists: 8, 1e-3, true, [q_proj, v_proj], all-linear."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _config(config_file: str | None, sets: tuple[str, ...]) -> dict:
    config: dict = {}
    if config_file:
        try:
            doc = yaml.safe_load(Path(config_file).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise InvalidInputError(f"config file {config_file}: {err}") from None
        if not isinstance(doc, dict):
            raise InvalidInputError(f"config file {config_file} must hold a mapping of config keys")
        config.update(doc)
    config.update({k: _value(v) for k, v in parse_pairs(sets, "--set").items()})
    return config


def _job_doc(job) -> dict:
    doc = job.to_dict()
    doc["checkpoint_step"] = job.checkpoint.get("step", 0)
    doc.pop("checkpoint", None)
    doc.pop("lease_until", None)
    doc.pop("delivery", None)
    return doc


def _job_text(job) -> str:
    lines = [f"{job.id}  {job.state}", f"  trainer:  {job.spec.trainer}", f"  base:     {job.spec.base}",
             f"  data:     {', '.join(job.spec.datasets)}", f"  out:      {job.spec.out}",
             f"  attempts: {job.attempts}/{job.max_attempts}" + (f"  worker: {job.worker} ({job.device})"
                                                                 if job.worker else "")]
    if job.total:
        lines.append(f"  step:     {job.step}/{job.total}  (checkpoint at {job.checkpoint.get('step', 0)})")
    if job.metrics:
        shown = {k: v for k, v in job.metrics.items() if k != "rank_pattern"}
        lines.append(f"  metrics:  {json.dumps(shown, sort_keys=True)}")
    if job.result:
        lines.append(f"  result:   {job.result['artifact']}@{job.result['digest']}")
    if job.error_message:
        lines.append(f"  error:    {job.error_code}: {job.error_message}")
    return "\n".join(lines)


def _finish(job, as_json: bool) -> None:
    _emit(as_json, _job_doc(job), _job_text(job))
    if job.state != SUCCEEDED:
        sys.exit(1)


@main.command()
@click.argument("trainer")
@click.option("--base", required=True, help="NAMESPACE/NAME[@REF] of the base model.")
@click.option("--data", required=True, help="DATASET[,DATASET...]: the domain data.")
@click.option("--out", required=True, help="NAMESPACE/NAME of the adapter to commit.")
@click.option("--set", "sets", multiple=True, help="KEY=VALUE trainer config (repeatable; values are YAML).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Trainer config file (YAML/JSON mapping); --set wins over it.")
@click.option("--replay", default=None, help="DATASET[,DATASET...]: general data mixed in at replay_fraction.")
@click.option("--resume-from", default=None, help="An adapter to continue training (lora).")
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Domain card for the router (default: the first texts of the data).")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE label on the result (repeatable).")
@click.option("--key", "idempotency_key", default=None, help="Idempotency key: a repeated submission is one job.")
@click.option("--max-attempts", type=int, default=0, help="Attempts before the job fails (default 3).")
@click.option("--watch", is_flag=True, help="Show live progress; exit when the job ends (non-zero unless it succeeded).")
@_hub_options
@_json_option
@click.pass_context
def train(ctx, trainer, base, data, out, sets, config_file, replay, resume_from, card_file, labels, idempotency_key,
          max_attempts, watch, hub_address, token, as_json):
    """Queue a TRAINER job (lora, adalora, increlora, rank_selective); print its id."""
    with _hub(ctx, hub_address, token, quiet=as_json) as hub:
        job, created = hub.submit_job(
            trainer, base=base, data=[d for d in data.split(",") if d], out=out,
            config=_config(config_file, sets), replay=[d for d in (replay or "").split(",") if d],
            resume_from=resume_from, card=_load_card(card_file), labels=parse_pairs(labels),
            idempotency_key=idempotency_key, max_attempts=max_attempts)
        if not watch:
            _emit(as_json, {**_job_doc(job), "created": created}, job.id if created else f"{job.id} (existing job)")
            return
        if not as_json:
            click.echo(job.id, err=True)
        _finish(hub.wait_job(job.id), as_json)


@main.group(invoke_without_command=True)
@_hub_options
@_json_option
@click.pass_context
def jobs(ctx, hub_address, token, as_json):
    """Training jobs: ls (default), show ID, watch ID, cancel ID."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(jobs_ls, namespace=None, limit=100, hub_address=hub_address, token=token, as_json=as_json)


@jobs.command("ls")
@click.argument("namespace", required=False)
@click.option("--limit", type=int, default=100, show_default=True)
@_hub_options
@_json_option
@click.pass_context
def jobs_ls(ctx, namespace, limit, hub_address, token, as_json):
    """List jobs, newest first."""
    with _hub(ctx, hub_address, token) as hub:
        found = hub.jobs(namespace, limit=limit)
    rows = [f"{j.id:<45} {j.state:<10} {j.spec.trainer:<15} {j.step:>6}/{j.total:<6} {j.spec.out}" for j in found]
    _emit(as_json, [_job_doc(j) for j in found], "\n".join(rows) or "no jobs")


@jobs.command("show")
@click.argument("job_id")
@_hub_options
@_json_option
@click.pass_context
def jobs_show(ctx, job_id, hub_address, token, as_json):
    """A job's state, attempts, worker, step and last metrics."""
    with _hub(ctx, hub_address, token) as hub:
        job = hub.job(job_id)
    _emit(as_json, _job_doc(job), _job_text(job))


@jobs.command("watch")
@click.argument("job_id")
@_hub_options
@_json_option
@click.pass_context
def jobs_watch(ctx, job_id, hub_address, token, as_json):
    """Follow a job with a live progress bar; exit non-zero unless it succeeded."""
    with _hub(ctx, hub_address, token, quiet=as_json) as hub:
        job = hub.wait_job(job_id)
    _finish(job, as_json)


@jobs.command("cancel")
@click.argument("job_id")
@_hub_options
@_json_option
@click.pass_context
def jobs_cancel(ctx, job_id, hub_address, token, as_json):
    """Cancel a job: a queued one at once, a running one at its next step."""
    with _hub(ctx, hub_address, token) as hub:
        job = hub.cancel_job(job_id)
    _emit(as_json, _job_doc(job), f"{job.id}  {job.state}" + ("  (stopping at the next step)"
                                                             if job.cancel_requested and not job.finished else ""))


@main.command()
@_hub_options
@_json_option
@click.pass_context
def trainers(ctx, hub_address, token, as_json):
    """The registered trainers and their config keys."""
    with _hub(ctx, hub_address, token) as hub:
        found = hub.trainers()
    lines = []
    for t in found:
        lines.append(f"{t['name']:<16} {t['title']}  {t['paper']}")
        lines += [f"    {k} = {json.dumps(v)}  # {t['help'][k]}" for k, v in sorted(t["defaults"].items())]
    _emit(as_json, found, "\n".join(lines))


@main.command()
@click.option("--redis", "redis_url", envvar="DELTAHUB_REDIS_URL", required=True,
              help="Redis URL the hub's jobs go through (DELTAHUB_REDIS_URL).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="auto: CUDA with bf16 when present, else CPU.")
@click.option("--name", default=None, help="Worker name (default host-pid-random).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where downloaded bases and datasets are kept, by digest.")
@click.option("--lease", "lease_s", type=float, default=30.0, show_default=True,
              help="Seconds a job stays held without renewal before another worker takes it.")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs.")
@click.option("--log-level", default="INFO", show_default=True)
@_hub_options
@click.pass_context
def worker(ctx, redis_url, device, name, cache_dir, lease_s, max_jobs, log_level, hub_address, token):
    """Take training jobs from Redis and run them (on CUDA when present) until stopped."""
    from deltahub.jobs import open_queue
    from deltahub_trainers.worker import Worker

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    queue = open_queue(redis_url, lease_s=lease_s)
    with _hub(ctx, hub_address, token, quiet=True) as hub:
        hub.health()
        w = Worker(hub, queue, device=device, name=name, cache_dir=cache_dir)
        click.echo(f"worker {w.name} on {w.device_type}, jobs from {redis_url}, hub {hub.address}", err=True)
        w.run(stop, max_jobs=max_jobs)
    queue.close()

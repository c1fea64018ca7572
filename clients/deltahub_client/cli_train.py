"""``deltahub train``, ``trainers`` and ``worker``: training, and the workers that run every kind of job."""

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
from deltahub_client.cli import _emit, _hub, _hub_options, _json_option, _load_card, main, parse_pairs
from deltahub_client.cli_jobs import finish, job_doc


def _value(text: str):
    """--set values are YAML scalars or lists: 8, 1e-3, true, [q_proj, v_proj], all-linear; a bare
    comma-separated list (q_proj,v_proj) is a list too (module names never hold commas)."""
    if "," in text and not text.strip().startswith(("[", "{", "'", '"')):
        return [part.strip() for part in text.split(",") if part.strip()]
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
@click.option("--key", "idempotency_key", default=None,
              help="Idempotency key: a repeated submission is one job; another request with it is refused.")
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
            _emit(as_json, {**job_doc(job), "created": created}, job.id if created else f"{job.id} (existing job)")
            return
        if not as_json:
            click.echo(job.id, err=True)
        finish(hub.wait_job(job.id), as_json)


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
              help="Where downloaded revisions are kept, by digest (and outputs, until uploaded).")
@click.option("--lease", "lease_s", type=float, default=30.0, show_default=True,
              help="Seconds a job stays held without renewal before another worker takes it.")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs.")
@click.option("--log-level", default="INFO", show_default=True)
@_hub_options
@click.pass_context
def worker(ctx, redis_url, device, name, cache_dir, lease_s, max_jobs, log_level, hub_address, token):
    """Take jobs of every kind from Redis (training, merges, evaluation, assemblies, task vectors) and run
    them, on CUDA when present, until stopped. Its token needs write scope on the jobs' namespaces."""
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

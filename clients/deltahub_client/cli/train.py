"""``deltahub train`` and ``trainers``: training jobs from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from deltahub.errors import InvalidInputError
from deltahub_client.cli.app import hub_command, load_card, parse_pairs
from deltahub_client.cli.text import finish, job_doc


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


@hub_command()
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
def train(hub, ui, trainer, base, data, out, sets, config_file, replay, resume_from, card_file, labels,
          idempotency_key, max_attempts, watch):
    """Queue a TRAINER job (lora, adalora, increlora, rank_selective); print its id."""
    job, created = hub.submit_job(
        trainer, base=base, data=[d for d in data.split(",") if d], out=out,
        config=_config(config_file, sets), replay=[d for d in (replay or "").split(",") if d],
        resume_from=resume_from, card=load_card(card_file), labels=parse_pairs(labels),
        idempotency_key=idempotency_key, max_attempts=max_attempts)
    if not watch:
        ui.emit({**job_doc(job), "created": created}, job.id if created else f"{job.id} (existing job)")
        return
    if not ui.json:
        click.echo(job.id, err=True)
    finish(hub.wait_job(job.id), ui)


@hub_command()
def trainers(hub, ui):
    """The registered trainers and their config keys."""
    found = hub.trainers()
    lines = []
    for t in found:
        lines.append(f"{t['name']:<16} {t['title']}  {t['paper']}")
        lines += [f"    {k} = {json.dumps(v)}  # {t['help'][k]}" for k, v in sorted(t["defaults"].items())]
    ui.emit(found, "\n".join(lines))

"""``deltahub jobs``: long-running work of every kind (train, merge, evaluate, assemble, task_vector)."""

from __future__ import annotations

import json
import sys
import time

import click

from deltahub.jobs import KINDS, STATES, SUCCEEDED
from deltahub_client.cli import _emit, _hub, _hub_options, _json_option, main


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def job_doc(job) -> dict:
    doc = job.to_dict()
    doc["checkpoint_step"] = job.checkpoint.get("step", 0)
    for private in ("checkpoint", "lease_until", "delivery", "request", "version"):
        doc.pop(private, None)
    return doc


def _what(job) -> str:
    s = job.spec
    if job.kind == "train":
        return f"{s.get('trainer')} -> {s.get('out')}"
    if job.kind in ("merge", "assemble"):
        return f"{s.get('recipe', {}).get('method')} -> {s.get('out')}"
    if job.kind == "evaluate":
        return f"{s.get('target')} on {s.get('data')}"
    return f"{s.get('finetuned')} -> {s.get('out')}"


def job_text(job) -> str:
    lines = [f"{job.id}  {job.kind}  {job.state}  ({job.stage})", f"  what:     {_what(job)}",
             f"  attempts: {job.attempts}/{job.max_attempts}" + (f"  worker: {job.worker} ({job.device})"
                                                                 if job.worker else ""),
             f"  created:  {_when(job.created_at)}  started: {_when(job.started_at)}  "
             f"finished: {_when(job.finished_at)}"]
    if job.total:
        lines.append(f"  progress: {job.done}/{job.total} {job.unit}s"
                     + (f"  (checkpoint at step {job.checkpoint['step']})" if job.checkpoint.get("step") else ""))
    if job.metrics:
        shown = {k: v for k, v in job.metrics.items() if k != "rank_pattern"}
        lines.append(f"  metrics:  {json.dumps(shown, sort_keys=True)}")
    if job.result:
        r = job.result
        lines.append(f"  result:   {r['artifact']}@{r['digest']}" + ("  (from cache)" if r.get("cached") else "")
                     if "artifact" in r else f"  result:   {json.dumps(r, sort_keys=True)}")
    if job.error_message:
        lines.append(f"  error:    {job.error_code} ({job.error_class or 'error'}): {job.error_message}")
    return "\n".join(lines)


def finish(job, as_json: bool) -> None:
    """Prints a finished job; exits non-zero unless it succeeded."""
    _emit(as_json, job_doc(job), job_text(job))
    if job.state != SUCCEEDED:
        sys.exit(1)


@main.group(invoke_without_command=True)
@_hub_options
@_json_option
@click.pass_context
def jobs(ctx, hub_address, token, as_json):
    """Jobs of every kind: ls (default), show ID, watch ID, cancel ID."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(jobs_ls, namespace=None, kind=None, state=None, limit=100, hub_address=hub_address, token=token,
                   as_json=as_json)


@jobs.command("ls")
@click.argument("namespace", required=False)
@click.option("--namespace", "namespace_opt", default=None, help="Only this namespace's jobs.")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only jobs of this kind.")
@click.option("--state", type=click.Choice(STATES, case_sensitive=False), default=None, help="Only jobs in this state.")
@click.option("--limit", type=int, default=100, show_default=True)
@_hub_options
@_json_option
@click.pass_context
def jobs_ls(ctx, namespace, kind, state, limit, hub_address, token, as_json, namespace_opt=None):
    """List jobs, newest first."""
    with _hub(ctx, hub_address, token) as hub:
        found = hub.jobs(namespace_opt or namespace, kind=kind, state=state.upper() if state else None, limit=limit)
    rows = [f"{j.id:<45} {j.kind:<11} {j.state:<10} {j.stage:<11} {j.done:>6}/{j.total:<6} {j.unit:<6} "
            f"{_when(j.created_at)}  {_what(j)}" for j in found]
    _emit(as_json, [job_doc(j) for j in found], "\n".join(rows) or "no jobs")


@jobs.command("show")
@click.argument("job_id")
@_hub_options
@_json_option
@click.pass_context
def jobs_show(ctx, job_id, hub_address, token, as_json):
    """A job's state, attempts, worker, progress, timestamps, and its result or error."""
    with _hub(ctx, hub_address, token) as hub:
        job = hub.job(job_id)
    _emit(as_json, job_doc(job), job_text(job))


@jobs.command("watch")
@click.argument("job_id")
@_hub_options
@_json_option
@click.pass_context
def jobs_watch(ctx, job_id, hub_address, token, as_json):
    """Follow a job with a live progress bar; exit non-zero unless it succeeded."""
    with _hub(ctx, hub_address, token, quiet=as_json) as hub:
        job = hub.wait_job(job_id)
    finish(job, as_json)


@jobs.command("cancel")
@click.argument("job_id")
@_hub_options
@_json_option
@click.pass_context
def jobs_cancel(ctx, job_id, hub_address, token, as_json):
    """Cancel a job: a queued one at once, a running one at its next step."""
    with _hub(ctx, hub_address, token) as hub:
        job = hub.cancel_job(job_id)
    _emit(as_json, job_doc(job), f"{job.id}  {job.state}" + ("  (stopping at the next step)"
                                                             if job.cancel_requested and not job.finished else ""))

"""``deltahub jobs``: long-running work of every kind (train, merge, evaluate, assemble, task_vector)."""

from __future__ import annotations

import click

from deltahub.jobs import KINDS, STATES
from deltahub_client.cli.app import hub_command, hub_options, json_option, main
from deltahub_client.cli.text import finish, job_doc, job_text, what, when


@main.group(invoke_without_command=True)
@hub_options
@json_option
@click.pass_context
def jobs(ctx, hub_address, token, as_json):
    """Jobs of every kind: ls (default), show ID, watch ID, cancel ID."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(jobs_ls, namespace=None, kind=None, state=None, limit=100, hub_address=hub_address, token=token,
                   as_json=as_json)


@hub_command("ls", group=jobs)
@click.argument("namespace", required=False)
@click.option("--namespace", "namespace_opt", default=None, help="Only this namespace's jobs.")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only jobs of this kind.")
@click.option("--state", type=click.Choice(STATES, case_sensitive=False), default=None, help="Only jobs in this state.")
@click.option("--limit", type=int, default=100, show_default=True)
def jobs_ls(hub, ui, namespace, kind, state, limit, namespace_opt=None):
    """List jobs, newest first."""
    found = hub.jobs(namespace_opt or namespace, kind=kind, state=state.upper() if state else None, limit=limit)
    rows = [f"{j.id:<45} {j.kind:<11} {j.state:<10} {j.stage:<11} {j.done:>6}/{j.total:<6} {j.unit:<6} "
            f"{when(j.created_at)}  {what(j)}" for j in found]
    ui.emit([job_doc(j) for j in found], "\n".join(rows) or "no jobs")


@hub_command("show", group=jobs)
@click.argument("job_id")
def jobs_show(hub, ui, job_id):
    """A job's state, attempts, worker, progress, timestamps, and its result or error."""
    job = hub.job(job_id)
    ui.emit(job_doc(job), job_text(job))


@hub_command("watch", group=jobs)
@click.argument("job_id")
def jobs_watch(hub, ui, job_id):
    """Follow a job with a live progress bar; exit non-zero unless it succeeded."""
    finish(hub.wait_job(job_id), ui)


@hub_command("cancel", group=jobs)
@click.argument("job_id")
def jobs_cancel(hub, ui, job_id):
    """Cancel a job: a queued one at once, a running one at its next step."""
    job = hub.cancel_job(job_id)
    ui.emit(job_doc(job), f"{job.id}  {job.state}" + ("  (stopping at the next step)"
                                                     if job.cancel_requested and not job.finished else ""))

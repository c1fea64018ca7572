"""How the command line prints hub objects: sizes, revisions, artifacts, jobs."""

from __future__ import annotations

import json
import sys
import time

from deltahub.artifacts import ArtifactInfo, Revision
from deltahub.jobs import SUCCEEDED
from deltahub_client.cli.app import Output


def size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def revision_text(rev: Revision) -> str:
    lines = [
        f"{rev.artifact}@{rev.digest}",
        f"  kind:     {rev.kind.value}",
        f"  refs:     {', '.join(rev.refs) or '-'}",
        f"  size:     {size(rev.size)} in {len(rev.files)} file(s)",
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
    lines += [f"    {f.path}  {size(f.size)}  sha256:{f.sha256[:16]}" for f in rev.files]
    return "\n".join(lines)


def artifact_row(a: ArtifactInfo) -> str:
    refs = ", ".join(f"{r}={d[:12]}" for r, d in sorted(a.refs.items())) or "-"
    return f"{a.name:<40} {a.kind.value:<12} {a.revision_count:>4} rev  {size(a.size):>9}  {refs}"


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def job_doc(job) -> dict:
    doc = job.to_dict()
    doc["checkpoint_step"] = job.checkpoint.get("step", 0)
    for private in ("checkpoint", "lease_until", "delivery", "request", "version"):
        doc.pop(private, None)
    return doc


def what(job) -> str:
    s = job.spec
    if job.kind == "train":
        return f"{s.get('trainer')} -> {s.get('out')}"
    if job.kind in ("merge", "assemble"):
        return f"{s.get('recipe', {}).get('method')} -> {s.get('out')}"
    if job.kind == "evaluate":
        return f"{s.get('target')} on {s.get('data')}"
    return f"{s.get('finetuned')} -> {s.get('out')}"


def job_text(job) -> str:
    lines = [f"{job.id}  {job.kind}  {job.state}  ({job.stage})", f"  what:     {what(job)}",
             f"  attempts: {job.attempts}/{job.max_attempts}" + (f"  worker: {job.worker} ({job.device})"
                                                                 if job.worker else ""),
             f"  created:  {when(job.created_at)}  started: {when(job.started_at)}  "
             f"finished: {when(job.finished_at)}"]
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


def finish(job, out: Output) -> None:
    """Prints a finished job; exits non-zero unless it succeeded."""
    out.emit(job_doc(job), job_text(job))
    if job.state != SUCCEEDED:
        sys.exit(1)

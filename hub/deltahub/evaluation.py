"""Held-out evaluation of a base model plus a combination of deltas.

One evaluator serves the greedy soup (score each ingredient and each
candidate soup), RECALL (hidden states of each input) and users
(``deltahub eval``). The metric follows the model: a
``*ForSequenceClassification`` model on rows with a ``label`` is scored by
accuracy; anything else as a causal LM by mean token cross-entropy, reported
as loss and perplexity, with score = -loss so that higher is better for both.

Unlike the merge executor this holds a whole model (float32) in memory: it
has to run it. The base weights are kept once; each evaluation writes
``base + sum_i c_i * tau_i`` into the model in place.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from deltahub.errors import InvalidInputError, PreconditionError
from deltahub.merging.sources import DeltaSource


@dataclass(frozen=True)
class EvalResult:
    metric: str          # "accuracy" or "loss"
    score: float         # higher is better: accuracy, or -loss
    samples: int
    loss: float | None = None
    perplexity: float | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _is_classifier(config: dict) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


class ModelProbe:
    """A base model folder, the inputs' deltas and held-out rows.

    Args:
        model_dir: a folder ``transformers`` loads (the base revision).
        sources: one delta source per input.
        rows: dataset rows (``text``, optional ``label``).
        device: where the model runs.
    """

    def __init__(self, model_dir: Path, sources: Sequence[DeltaSource], rows: list[dict], *,
                 device: torch.device, batch_size: int = 8, max_length: int = 256) -> None:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        if not rows:
            raise InvalidInputError("the evaluation dataset has no rows")
        config = json.loads((model_dir / "config.json").read_text())
        self.classifier = _is_classifier(config) and all("label" in r for r in rows)
        self.metric = "accuracy" if self.classifier else "loss"
        cls = AutoModelForSequenceClassification if self.classifier else AutoModelForCausalLM
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError) as err:
            raise PreconditionError(f"the base model has no usable tokenizer for evaluation: {err}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = cls.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.device = device
        self.sources = list(sources)
        self.rows = rows
        self.batch_size, self.max_length = batch_size, max_length
        self._label2id = {str(k): int(v) for k, v in (self.model.config.label2id or {}).items()}
        self._params = dict(self.model.named_parameters())
        self._base = {name: p.detach().clone() for name, p in self._params.items()}

    @property
    def num_inputs(self) -> int:
        return len(self.sources)

    def texts(self, limit: int | None = None) -> list[str]:
        return [r["text"] for r in self.rows[:limit]]

    @torch.no_grad()
    def load(self, coeffs: Sequence[float]) -> None:
        """Set the model's weights to base + sum_i c_i * tau_i."""
        for name, param in self._params.items():
            base = self._base[name]
            value = base.clone()
            for src, c in zip(self.sources, coeffs):
                if c == 0:
                    continue
                delta = src.delta(name, base.cpu())
                if delta is not None:
                    value.add_(delta.to(value.device, value.dtype), alpha=float(c))
            param.copy_(value)

    def _batches(self, texts: list[str]):
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length)
            yield i, {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _label(self, value) -> int:
        if isinstance(value, int):
            return value
        if str(value) not in self._label2id:
            raise InvalidInputError(f"label {value!r} is not one of the model's labels {sorted(self._label2id)}")
        return self._label2id[str(value)]

    @torch.no_grad()
    def evaluate(self, coeffs: Sequence[float] | None = None, *,
                 progress: Callable[[int, int], None] | None = None) -> EvalResult:
        """The metric over every row; ``progress(rows done, rows)`` after each batch."""
        self.load(coeffs if coeffs is not None else [1.0] * self.num_inputs)
        texts = self.texts()

        def batches():
            for i, batch in self._batches(texts):
                yield i, batch
                if progress:
                    progress(min(i + self.batch_size, len(texts)), len(texts))

        if self.classifier:
            correct = 0
            for i, batch in batches():
                pred = self.model(**batch).logits.argmax(-1).cpu()
                gold = torch.tensor([self._label(r["label"]) for r in self.rows[i:i + len(pred)]])
                correct += int((pred == gold).sum())
            acc = correct / len(texts)
            return EvalResult("accuracy", acc, len(texts), accuracy=acc)
        total_loss, total_tokens = 0.0, 0
        for _, batch in batches():
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
            n = int((shift_labels != -100).sum())
            if n:
                total_loss += float(torch.nn.functional.cross_entropy(
                    shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                    ignore_index=-100, reduction="sum"))
                total_tokens += n
        if total_tokens == 0:
            raise InvalidInputError("the evaluation texts have no token to predict (each needs at least two tokens)")
        loss = total_loss / total_tokens
        return EvalResult("loss", -loss, len(texts), loss=loss, perplexity=math.exp(min(loss, 50.0)))

    def score(self, coeffs: Sequence[float]) -> float:
        return self.evaluate(coeffs).score

    @torch.no_grad()
    def representations(self, index: int, texts: list[str]) -> list[torch.Tensor]:
        """Input ``index``'s hidden states on ``texts``, mean-pooled over tokens: one (n, d) per hidden state."""
        self.load([1.0 if i == index else 0.0 for i in range(self.num_inputs)])
        per_layer: list[list[torch.Tensor]] = []
        for _, batch in self._batches(texts):
            out = self.model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
            pooled = [(h.float() * mask).sum(1) / mask.sum(1).clamp(min=1) for h in out.hidden_states]
            if not per_layer:
                per_layer = [[] for _ in pooled]
            for layer, p in zip(per_layer, pooled):
                layer.append(p.cpu())
        return [torch.cat(chunks) for chunks in per_layer]



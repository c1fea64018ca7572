"""Builders for tiny artifacts, made in-process from configs (no downloads); hubs to test against."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

TINY_LLAMA = dict(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
)
WORDS = (
    "the a market bonds rates rose fell rallied stock court law judge patient doctor dose treatment "
    "contract appeal liability verdict equity yield inflation symptom diagnosis clinic ruling statute"
).split()


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def make_tiny_llama(dest: Path, *, seed: int = 0, perturb: float = 0.0, perturb_seed: int = 1, **config) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config}))
    if perturb:
        g = torch.Generator().manual_seed(perturb_seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * perturb)
    model.save_pretrained(dest)
    make_tokenizer().save_pretrained(dest)
    return dest


def make_adapter(base_dir: Path, dest: Path, *, r: int = 4, seed: int = 0, targets=("q_proj", "v_proj")) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    # init_lora_weights=False: B is random too, so the adapter changes the output
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                  init_lora_weights=False))
    peft_model.save_pretrained(dest)
    return dest


def make_dataset(dest: Path, texts: list[str], *, labels: list | None = None) -> Path:
    with open(dest / "train.jsonl", "w") as fh:
        for i, text in enumerate(texts):
            row = {"text": text}
            if labels is not None:
                row["label"] = labels[i]
            fh.write(json.dumps(row) + "\n")
    return dest


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


@contextmanager
def local_hub(data_dir: Path, **config) -> Iterator[tuple[object, object, str]]:
    """A real server on 127.0.0.1:0 over ``data_dir`` and a client; yields (hub, store, address)."""
    from deltahub_client import Hub
    from deltahub_server import ServerConfig, create_server

    running = create_server(ServerConfig(data_dir=data_dir, address="127.0.0.1:0", **config))
    address = f"127.0.0.1:{running.port}"
    hub = Hub(address, progress=False)
    try:
        yield hub, running.store, address
    finally:
        hub.close()
        running.stop(grace=None)


class MotoServer:
    """moto's standalone S3 server on a free loopback port; sets AWS_ENDPOINT_URL and test credentials."""

    def __init__(self, workdir: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir

    def __enter__(self) -> str:
        import urllib.request

        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], cwd=self.workdir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        self._saved = {k: os.environ.get(k) for k in MOTO_ENV}
        os.environ.update({**MOTO_ENV, "AWS_ENDPOINT_URL": self.endpoint})
        return self.endpoint

    def __exit__(self, *exc) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.proc.terminate()
        self.proc.wait(10)


MOTO_ENV = {"AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1"}


class ServeProcess:
    """``deltahub serve`` in a process of its own, as a user starts it; ``stop`` or ``kill`` it."""

    def __init__(self, data_dir: Path, *extra: str, address: str = "127.0.0.1:0") -> None:
        exe = Path(sys.executable).with_name("deltahub")
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--data-dir", str(data_dir), "--address", address, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.log: list[str] = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            self.log.append(line)
            m = re.search(r"listening on ([\d.]+):(\d+)", line)
            if m:
                self.address = f"{m[1]}:{m[2]}"
                break
        threading.Thread(target=self._drain, daemon=True).start()
        self.env = {"DELTAHUB_ADDRESS": self.address}

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self.proc.kill()
        self.proc.wait(timeout=30)

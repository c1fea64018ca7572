"""What a parameter name says about its role (embedding, head), across architectures."""

from __future__ import annotations

# input embeddings and output heads of the common architectures (Llama, GPT-2, BERT, GPT-NeoX, ChatGLM)
INPUT_EMBEDDINGS = ("embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings",
                    "token_type_embeddings", "embed_in")
OUTPUT_HEADS = ("lm_head", "embed_out", "output_layer")


def _parts(name: str) -> list[str]:
    return name.split(".")


def is_input_embedding(name: str) -> bool:
    return any(p in INPUT_EMBEDDINGS for p in _parts(name))


def is_embedding(name: str) -> bool:
    """Input embeddings or the LM head: what a vocabulary extension resizes."""
    return any(p in INPUT_EMBEDDINGS or p in OUTPUT_HEADS for p in _parts(name))


def module_of(name: str) -> str | None:
    """The module a LoRA could target for this parameter: 2-D ``<module>.weight`` of a linear layer."""
    if not name.endswith(".weight") or is_input_embedding(name):
        return None
    return name[: -len(".weight")]

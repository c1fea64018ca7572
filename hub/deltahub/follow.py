"""Following a versioned record held in memory (an operation, a job) until it is finished."""

from __future__ import annotations

import threading
from typing import Callable, Iterator, Protocol, TypeVar


class Versioned(Protocol):
    version: int  # bumps on every change

    @property
    def finished(self) -> bool: ...


T = TypeVar("T", bound=Versioned)


def follow(cond: threading.Condition, get: Callable[[], T], *, alive: Callable[[], bool] = lambda: True,
           poll_s: float = 1.0) -> Iterator[T]:
    """Yields the record now and at every new version, until it is finished or ``alive`` turns false.

    Writers change the record under ``cond`` and ``notify_all``; ``poll_s`` bounds each wait so a caller
    gone away (``alive``) is noticed without a notification.
    """
    seen = -1
    while alive():
        with cond:
            item = get()
            if item.version == seen:
                cond.wait(timeout=poll_s)
                item = get()
        if item.version != seen:
            seen = item.version
            yield item
            if item.finished:
                return

"""Many callers at the same moment: the races the service must survive (one refresh for many
readers, one winner among lease takers, exact fault counts) need them to start together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def at_once(count: int, call: Callable[[int], T]) -> list[T]:
    """Run ``call(0)`` ... ``call(count - 1)`` in ``count`` threads released together by a
    barrier; their results in that order once every one has returned. The first exception a
    call raised is raised here, after all have finished."""
    barrier = threading.Barrier(count)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = call(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(count)]

"""One local stack (``python -m devstack`` in a subprocess) per test module.

Most HTTP test modules run their tests against one stack started with their own options: the
fixture is made here so each module states only what differs (its temp dir name, parameters,
environment and flags)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.process import DevstackProcess, start_devstack


def module_stack(directory: str, *, name: str = "stack", **options: Any) -> Any:
    """A module-scoped fixture called ``name``: a stack started in a temp dir ``directory`` with
    ``start_devstack``'s ``options``, stopped after the module's last test."""

    @pytest.fixture(scope="module", name=name)
    def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevstackProcess]:
        with start_devstack(tmp_path_factory.mktemp(directory), **options) as process:
            yield process

    return running_stack

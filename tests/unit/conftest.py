"""Fixtures the unit tests of the sweep and the worker share (``tests/unit/sweep_harness.py``).

A module that defines its own ``h`` (the connect flow's, the tenant isolation's) overrides this
one, as pytest does for any fixture of a closer scope.
"""

from __future__ import annotations

import pytest

from tests.unit.sweep_harness import Harness


@pytest.fixture
def h(aws, sim) -> Harness:
    """The sweep, the worker and a vault over moto and the simulator."""
    return Harness(aws, sim)

"""The Python client (clients/python) loaded from its source file, as a workload would import it
once installed: the client is not installed in the dev venv (it is a package of its own)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

CLIENT_INIT = Path(__file__).resolve().parents[2] / "clients/python/qbo_connect_client/__init__.py"


def load_client(module_name: str = "qbo_connect_client") -> ModuleType:
    """A fresh copy of ``qbo_connect_client`` under ``module_name`` (its own client cache)."""
    spec = importlib.util.spec_from_file_location(module_name, CLIENT_INIT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

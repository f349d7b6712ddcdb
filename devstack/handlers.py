"""Running a function's real handler in this process, the way the Lambda runtime does.

Shared by the local stack, the benchmarks and the reliability tests' worker processes, so each
loads ``functions/<dir>/app.py`` the same way: by file path, under its own module name (every
handler file is called ``app.py``, so ``import app`` would make them collide).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

_modules: dict[str, ModuleType] = {}
_lock = threading.Lock()


def ensure_layer_on_path() -> None:
    """Make ``qbo_connect`` importable as it is from /opt/python in Lambda."""
    layer = str(REPO_ROOT / "layers" / "core")
    if layer not in sys.path:
        sys.path.insert(0, layer)


def load_handler(function_dir: str, *, module_prefix: str = "qbo_fn") -> ModuleType:
    """``functions/<function_dir>/app.py``, loaded once per process under a unique name."""
    ensure_layer_on_path()
    name = f"{module_prefix}_{function_dir}_app"
    with _lock:
        module = _modules.get(name)
        if module is None:
            path = REPO_ROOT / "functions" / function_dir / "app.py"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            _modules[name] = module
        return module


class LambdaContext:
    """The attributes and method of the context object the Python runtime passes."""

    def __init__(
        self,
        *,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        timeout_seconds: float,
        request_id: str | None = None,
        function_version: str = "$LATEST",
        client_context: Any = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = (
            f"{datetime.now(UTC):%Y/%m/%d}/[{function_version}]{uuid.uuid4().hex}"
        )
        self.identity = None
        self.client_context = client_context
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    @classmethod
    def for_function(cls, function_name: str, *, timeout_seconds: float = 60.0) -> Any:
        """A context for a function of the local account, e.g. ``GetTokenFunction``."""
        return cls(
            function_name=function_name,
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}",
            memory_limit_in_mb=512,
            timeout_seconds=timeout_seconds,
        )

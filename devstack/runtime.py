"""One Lambda function in this process: its handler, loaded by file path, and invoke semantics.

Every handler file is ``app.py``, so each is loaded under its own module name; a broken handler
fails only its own invocations (as an init failure does in Lambda), with Lambda's error shape.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack import aws_calls
from devstack.handlers import LambdaContext

log = logging.getLogger("devstack")


@dataclass
class InvocationResult:
    """What one invoke produced: a JSON-compatible payload or a Lambda function error."""

    payload: Any = None
    error: dict[str, str] | None = None
    request_id: str = ""
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def body(self) -> bytes:
        return json.dumps(self.error if self.error is not None else self.payload).encode()


@dataclass
class _Stats:
    invocations: int = 0
    errors: int = 0


class FunctionRuntime:
    """One function: its handler (loaded lazily, by file path) and its invoke semantics.

    Lazy because a broken handler must fail only its own invocations, as a Lambda function's
    init failure does; an import failure is retried on the next call (a new cold start).
    """

    def __init__(
        self,
        logical_id: str,
        *,
        code_dir: Path,
        handler: str,
        timeout: float,
        memory_size: int,
        physical_name: str,
        arn: str,
    ) -> None:
        self.logical_id = logical_id
        self.code_dir = code_dir
        self.handler_spec = handler
        self.timeout = float(timeout)
        self.memory_size = memory_size
        self.physical_name = physical_name
        self.arn = arn
        self.module_name = f"qbo_fn_{logical_id}"
        self.stats = _Stats()
        self._handler: Callable[[Any, Any], Any] | None = None
        self._lock = threading.Lock()

    # -- loading

    def _module_file(self) -> tuple[Path, str]:
        module_path, _, attribute = self.handler_spec.rpartition(".")
        if not module_path or not attribute:
            raise _InitError("Runtime.MalformedHandlerName", f"Bad handler {self.handler_spec!r}")
        return self.code_dir / (module_path.replace(".", "/") + ".py"), attribute

    def load(self) -> Callable[[Any, Any], Any]:
        with self._lock:
            if self._handler is not None:
                return self._handler
            path, attribute = self._module_file()
            module_name = path.stem
            if not path.is_file():
                raise _InitError(
                    "Runtime.ImportModuleError",
                    f"Unable to import module '{module_name}': No module named '{module_name}'",
                )
            spec = importlib.util.spec_from_file_location(self.module_name, path)
            if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
                raise _InitError("Runtime.ImportModuleError", f"Cannot load {path}")
            module: ModuleType = importlib.util.module_from_spec(spec)
            sys.modules[self.module_name] = module
            try:
                spec.loader.exec_module(module)
            except SyntaxError as exc:
                sys.modules.pop(self.module_name, None)
                raise _InitError(
                    "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
                ) from exc
            except Exception as exc:
                sys.modules.pop(self.module_name, None)
                raise _InitError(
                    "Runtime.ImportModuleError",
                    f"Unable to import module '{module_name}': {exc}",
                ) from exc
            handler = getattr(module, attribute, None)
            if not callable(handler):
                sys.modules.pop(self.module_name, None)
                raise _InitError(
                    "Runtime.HandlerNotFound",
                    f"Handler '{attribute}' missing on module '{module_name}'",
                )
            self._handler = handler
            return handler

    def set_handler(self, handler: Callable[[Any, Any], Any] | None) -> None:
        """Replace the handler (in-process tests); None reloads the real one on next call."""
        with self._lock:
            self._handler = handler

    # -- invoking

    def invoke(self, event: Any, *, client_context: Any = None) -> InvocationResult:
        """Run the handler like Lambda: JSON in, JSON out, errors and timeouts as data."""
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        outcome: dict[str, Any] = {}

        def run() -> None:
            with aws_calls.attributed_to(self.logical_id):
                run_handler()

        def run_handler() -> None:
            try:
                handler = self.load()
                context = LambdaContext(
                    function_name=self.physical_name,
                    invoked_function_arn=self.arn,
                    memory_limit_in_mb=self.memory_size,
                    timeout_seconds=self.timeout,
                    request_id=request_id,
                    client_context=client_context,
                )
                result = handler(json.loads(json.dumps(event)), context)
                try:
                    outcome["payload"] = json.loads(json.dumps(result))
                except (TypeError, ValueError) as exc:
                    outcome["error"] = {
                        "errorMessage": f"Unable to marshal response: {exc}",
                        "errorType": "Runtime.MarshalError",
                    }
            except _InitError as exc:
                log.error("%s init failed: %s: %s", self.logical_id, exc.error_type, exc.message)
                outcome["error"] = {"errorMessage": exc.message, "errorType": exc.error_type}
            except BaseException as exc:  # the handler's failure is data, not our crash
                log.error(
                    "%s raised %s\n%s",
                    self.logical_id,
                    type(exc).__name__,
                    "".join(traceback.format_exception(exc)).rstrip(),
                )
                outcome["error"] = {"errorMessage": str(exc), "errorType": type(exc).__name__}

        worker = threading.Thread(target=run, name=f"fn-{self.logical_id}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        duration = (time.monotonic() - started) * 1000
        self.stats.invocations += 1
        if worker.is_alive():
            # Lambda would kill the sandbox; a thread cannot be killed, so it runs on unobserved.
            self.stats.errors += 1
            log.error("%s timed out after %.2f seconds", self.logical_id, self.timeout)
            return InvocationResult(
                error={
                    "errorMessage": (
                        f"RequestId: {request_id} Error: Task timed out after "
                        f"{self.timeout:.2f} seconds"
                    ),
                    "errorType": "Sandbox.Timedout",
                },
                request_id=request_id,
                duration_ms=duration,
            )
        if "error" in outcome:
            self.stats.errors += 1
            return InvocationResult(
                error=outcome["error"], request_id=request_id, duration_ms=duration
            )
        return InvocationResult(
            payload=outcome.get("payload"), request_id=request_id, duration_ms=duration
        )


class _InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message

"""Running the installed ``qbo-connect`` console script, or a Python program, as a user would:
in a subprocess with the environment and working directory a test chooses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def cli_path() -> str:
    """The console script `make install` put next to this interpreter (it must be there)."""
    found = shutil.which("qbo-connect", path=str(Path(sys.executable).parent))
    assert found, "qbo-connect is not installed in this virtualenv: run `make install`"
    return found


def run(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end; its exit code and output as text (never raises on a
    failure: the test asserts on ``returncode``)."""
    return subprocess.run(
        list(command),
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def run_cli(
    args: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``qbo-connect *args``."""
    return run([cli_path(), *args], env=env, cwd=cwd, stdin=stdin, timeout=timeout)


def run_python(
    program: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -c program`` with this interpreter."""
    return run([sys.executable, "-c", program], env=env, cwd=cwd, timeout=timeout)

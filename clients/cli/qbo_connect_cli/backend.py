"""Finding a qbo-connect stack's functions and invoking them.

The CLI never touches the table, the key or the secret: it invokes ConnectionsFunction and
GetTokenFunction exactly as another workload would, so an operator needs only
``lambda:InvokeFunction`` on the two functions (and ``cloudformation:DescribeStacks`` to find
them by stack name). Every way this can fail is turned into a :class:`CliError` with a sentence
an operator can act on and an exit code that scripts can branch on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Exit codes (also in the README): 0 everything asked succeeded; 1 the service refused or
#: failed part of it; 2 bad usage (click's own code); 3 the stack could not be reached at all.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

CONNECTIONS_FUNCTION = "ConnectionsFunction"
GET_TOKEN_FUNCTION = "GetTokenFunction"
API_FUNCTION = "QuickBooksApiFunction"
#: The stack Outputs that name the functions (template.yaml's Outputs section).
FUNCTION_OUTPUTS = {
    CONNECTIONS_FUNCTION: "ConnectionsFunctionName",
    GET_TOKEN_FUNCTION: "GetTokenFunctionName",
    API_FUNCTION: "QuickBooksApiFunctionName",
}
LOCAL_ENDPOINTS = Path(".devstack") / "endpoints.json"
ENV_STACK = "QBO_CONNECT_STACK"
ENV_ENDPOINTS = "QBO_CONNECT_ENDPOINTS"
#: Above the functions' own timeouts (QuickBooksApiFunction's 300 s: Intuit's 120 s plus the
#: governor's waits), so a slow answer still arrives.
READ_TIMEOUT_SECONDS = 330
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
_EXPIRED_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "UnrecognizedClientException"}


class CliError(Exception):
    """A failure to report as one line: a stable ``code``, a safe ``message``, an exit code."""

    def __init__(self, code: str, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.exit_code = exit_code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class ServiceError(CliError):
    """The function answered ``{"error": {"code", "message"}}`` (the invoke contract)."""


class Unreachable(CliError):
    """The stack or its functions cannot be reached (exit code 3): nothing was done."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, EXIT_UNREACHABLE)


@dataclass
class Target:
    """A place the functions run: ``describe`` names it in messages."""

    describe: str
    function_names: Mapping[str, str]
    lambda_client: Any = field(repr=False)
    #: Said after "cannot reach ..." (for the local stack: how to start it).
    unreachable_hint: str = ""

    def invoke(self, function: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The function's answer; raises ServiceError for a contract error, else CliError."""
        name = self.function_names[function]
        try:
            response = self.lambda_client.invoke(
                FunctionName=name,
                InvocationType="RequestResponse",
                Payload=json.dumps(dict(payload)).encode(),
            )
        except Exception as exc:
            raise _invoke_failure(exc, name, self.describe, self.unreachable_hint) from None
        raw = response["Payload"].read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if response.get("FunctionError"):
            detail = body.get("errorType") if isinstance(body, dict) else None
            raise CliError(
                "function_error",
                f"{function} failed ({detail or response['FunctionError']}); see its logs",
            )
        if not isinstance(body, dict):
            raise CliError("invalid_response", f"{function} returned no JSON object")
        error = body.get("error")
        if isinstance(error, dict):
            raise ServiceError(
                str(error.get("code") or "internal_error"), str(error.get("message") or "")
            )
        return body


def _client_error_code(exc: Exception) -> tuple[str, str] | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        return str(error.get("Code") or ""), str(error.get("Message") or "")
    return None


def _failure_detail(exc: Exception) -> tuple[str, str]:
    """(AWS error code, what to say after "failed: "): ``code: message`` for an AWS error, the
    exception's type name (and no code) for anything else; never the request."""
    error = _client_error_code(exc)
    if error is None:
        return "", type(exc).__name__
    code, message = error
    return code, f"{code}: {message}"


def _access_problem(exc: Exception, action: str) -> Unreachable | None:
    """The credentials are missing, refused or not allowed to ``action`` (exit code 3); None
    when the failure is something else."""
    from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return Unreachable(
            "no_credentials",
            "no AWS credentials found: set AWS_PROFILE (or pass --profile) or the AWS_* variables",
        )
    if isinstance(exc, NoRegionError):
        return Unreachable(
            "no_region",
            "no AWS region: pass --region, set AWS_DEFAULT_REGION or give your profile a region",
        )
    code, message = _client_error_code(exc) or ("", "")
    if code in _DENIED:
        return Unreachable("no_permission", f"no permission to {action}: {message}")
    if code in _EXPIRED_CREDENTIALS:
        return Unreachable("bad_credentials", f"AWS refused the credentials: {message}")
    return None


def _invoke_failure(exc: Exception, name: str, where: str, hint: str = "") -> CliError:
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    problem = _access_problem(exc, f"invoke {name} (lambda:InvokeFunction)")
    if problem is not None:
        return problem
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return Unreachable("unreachable", f"cannot reach the Lambda API of {where}{hint}")
    if isinstance(exc, ReadTimeoutError):
        return CliError("timeout", f"{name} did not answer within {READ_TIMEOUT_SECONDS} s")
    code, detail = _failure_detail(exc)
    if code == "ResourceNotFoundException":
        return Unreachable("function_not_found", f"function {name} not found in {where}")
    if code in ("TooManyRequestsException", "ThrottlingException"):
        return CliError("throttled", f"Lambda throttled the invoke of {name}; try again")
    return CliError("invoke_failed", f"invoking {name} failed: {detail}")


def _lambda_client(session: Any, **kwargs: Any) -> Any:
    from botocore.config import Config

    config = Config(
        read_timeout=READ_TIMEOUT_SECONDS,
        connect_timeout=5,
        retries={"mode": "standard", "max_attempts": 3},
    )
    return session.create_client("lambda", config=config, **kwargs)


def _session(profile: str | None, region: str | None) -> Any:
    """A botocore session: the CLI makes two clients and needs nothing of boto3's, whose import
    (s3transfer with it) would add about a fifth of a second to every command."""
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    session = botocore.session.Session(profile=profile)
    if region:
        session.set_config_variable("region", region)
    try:
        session.get_scoped_config()  # reads the profile now, as boto3's Session would
    except ProfileNotFound:
        raise Unreachable("no_credentials", f"AWS profile {profile!r} not found") from None
    return session


def stack_target(stack: str, *, profile: str | None = None, region: str | None = None) -> Target:
    """The functions named by a deployed stack's Outputs."""
    session = _session(profile, region)
    try:
        cfn = session.create_client("cloudformation")
        answer = cfn.describe_stacks(StackName=stack)
    except Exception as exc:
        raise _describe_failure(exc, stack, session.get_config_variable("region")) from None
    stacks = answer.get("Stacks") or []
    if not stacks:
        raise Unreachable("stack_not_found", f"stack {stack!r} not found")
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stacks[0].get("Outputs") or []}
    names: dict[str, str] = {}
    for function, output in FUNCTION_OUTPUTS.items():
        if not outputs.get(output):
            status = stacks[0].get("StackStatus", "")
            raise Unreachable(
                "not_a_qbo_connect_stack",
                f"stack {stack!r} ({status}) has no {output} output: is it a qbo-connect stack, "
                "and has its deployment finished?",
            )
        names[function] = outputs[output]
    where = f"stack {stack} ({session.get_config_variable('region')})"
    return Target(where, names, _lambda_client(session))


def _describe_failure(exc: Exception, stack: str, region: str | None) -> CliError:
    from botocore.exceptions import EndpointConnectionError

    problem = _access_problem(exc, f"read stack {stack!r} (cloudformation:DescribeStacks)")
    if problem is not None:
        return problem
    if isinstance(exc, EndpointConnectionError):
        return Unreachable("unreachable", f"cannot reach CloudFormation in {region}")
    code, detail = _failure_detail(exc)
    if code == "ValidationError" and "does not exist" in detail:
        return Unreachable("stack_not_found", f"stack {stack!r} not found in {region}")
    return Unreachable("aws_error", f"DescribeStacks failed: {detail}")


def find_endpoints_file(start: Path | None = None) -> Path | None:
    """``.devstack/endpoints.json`` here or in a parent directory (like git finds ``.git``)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / LOCAL_ENDPOINTS
        if candidate.is_file():
            return candidate
    return None


def local_target(endpoints_file: Path | None = None) -> Target:
    """The local stack (``make dev``), from the endpoints file it writes once it is ready."""
    import botocore.session

    path = endpoints_file or find_endpoints_file()
    if path is None:
        here = Path.cwd().resolve()
        raise Unreachable(
            "local_stack_not_running",
            f"the local stack is not running, or not found: looked for {LOCAL_ENDPOINTS} in "
            f"{here} and each parent directory up to {here.anchor}. Start the stack with "
            "`make dev` in your qbo-connect checkout, run this from inside it, or point to its "
            f"endpoints file with --endpoints FILE or {ENV_ENDPOINTS}=FILE",
        )
    if not path.is_file():
        raise Unreachable(
            "local_stack_not_running",
            f"the local stack is not running ({path} not found): start it with `make dev`, "
            f"or point --endpoints / {ENV_ENDPOINTS} at the file it writes",
        )
    try:
        endpoints = json.loads(path.read_text(encoding="utf-8"))
        url = str(endpoints["lambda"])
    except (OSError, ValueError, KeyError, TypeError):
        raise Unreachable(
            "local_stack_not_running", f"{path} is not a local stack endpoints file"
        ) from None
    pid = endpoints.get("pid")
    if isinstance(pid, int) and not _process_alive(pid):
        raise Unreachable(
            "local_stack_not_running",
            f"the local stack that wrote {path} (pid {pid}) has stopped: start it with `make dev`",
        )
    functions = endpoints.get("functions") or {}
    names = {f: str(functions.get(f) or f) for f in FUNCTION_OUTPUTS}
    session = botocore.session.Session()
    session.set_credentials("testing", "testing")
    session.set_config_variable("region", str(endpoints.get("region") or "us-east-1"))
    return Target(
        f"the local stack at {url}",
        names,
        _lambda_client(session, endpoint_url=url),
        unreachable_hint=": is it running? Start it with `make dev`",
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True

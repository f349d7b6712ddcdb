"""Record every AWS call a function's code makes, for the IAM test (tests/iam).

Why: moto enforces no IAM and no KMS key policy, so a function that lacks a permission passes
every local test and fails on its first real request. The IAM test closes that gap by checking
what the code actually called against what template.yaml grants. This module is the recording
half: botocore event hooks on every client created in the process, each call tagged with the
logical id of the function whose code made it.

How calls are attributed: the local stack (and any harness that calls handlers itself) runs a
handler inside :func:`attributed_to`, which tags the current thread; threads started while a
tag is set inherit it (the sweep fans out over a thread pool). Calls from untagged threads are
the harness's own (creating resources, polling queues) and are not recorded.

Where records go: with ``QBO_AWS_CALL_LOG_DIR`` set, :func:`install_from_env` writes one JSON
line per distinct call to ``<dir>/calls-<pid>.jsonl``, appended and flushed at once (a process
that is SIGKILLed keeps what it recorded). A line is either a *binding* (the values this
process gave the environment variables template.yaml declares, which is how the test maps a
physical name back to a template resource) or a *call*::

    {"binding": "<id>", "env": {"TABLE_NAME": "...", ...}}
    {"call": 1, "binding": "<id>", "function": "GetTokenFunction", "service": "dynamodb",
     "operation": "GetItem", "requirements": [["dynamodb:GetItem", "arn:aws:dynamodb:..."]],
     "encryption_context": {...}}

``requirements`` are the IAM (action, resource ARN) pairs the call needs, derived from its
parameters (a batch or transaction needs one per table and kind of item). Nothing here ever
sees a token value: parameters are reduced to names, ARNs and KMS encryption contexts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack.template import DEFAULT_ACCOUNT_ID, load_template

ENV_VAR = "QBO_AWS_CALL_LOG_DIR"
_TAG = "_qbo_function_logical_id"
_REPO_ROOT = Path(__file__).resolve().parent.parent

#: IAM authorises these operations as another action (the batch forms of single calls).
IAM_ACTION_OF = {
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
}
#: TransactWriteItems / TransactGetItems: each item is authorised as its single-item action.
_TRANSACT_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}

_lock = threading.Lock()
_recorder: Recorder | None = None


# --------------------------------------------------------------------------------------------
# Attribution


def current_function() -> str | None:
    """The logical id of the function whose code runs on this thread, if any."""
    return getattr(threading.current_thread(), _TAG, None)


@contextlib.contextmanager
def attributed_to(logical_id: str) -> Iterator[None]:
    """Attribute the AWS calls made on this thread (and threads it starts) to a function."""
    thread = threading.current_thread()
    previous = getattr(thread, _TAG, None)
    setattr(thread, _TAG, logical_id)
    try:
        yield
    finally:
        setattr(thread, _TAG, previous)


_original_start = threading.Thread.start


def _start_inheriting_tag(self: threading.Thread) -> None:
    tag = current_function()
    if tag is not None and getattr(self, _TAG, None) is None:
        setattr(self, _TAG, tag)
    _original_start(self)


# --------------------------------------------------------------------------------------------
# From a call's parameters to the IAM (action, resource) pairs it needs


def _arn(service: str, region: str, account: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def _table_arn(name: str, region: str) -> str:
    if name.startswith("arn:"):
        return name
    return _arn("dynamodb", region, DEFAULT_ACCOUNT_ID, f"table/{name}")


def _key_arn(key_id: str, region: str) -> str:
    if key_id.startswith("arn:"):
        return key_id
    if key_id.startswith("alias/"):
        return _arn("kms", region, DEFAULT_ACCOUNT_ID, key_id)
    return _arn("kms", region, DEFAULT_ACCOUNT_ID, f"key/{key_id}")


def queue_arn_from_url(url: str, region: str) -> str:
    """``https://sqs.../123456789012/name`` (or moto's ``http://host/acct/name``) -> ARN."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) >= 2:
        return _arn("sqs", region, parts[-2], parts[-1])
    return _arn("sqs", region, DEFAULT_ACCOUNT_ID, parts[-1] if parts else url)


def requirements(
    service: str, operation: str, params: Mapping[str, Any], region: str
) -> list[tuple[str, str]]:
    """The IAM (action, resource ARN) pairs one API call needs; ``*`` when not resource-scoped."""
    action = IAM_ACTION_OF.get((service, operation), f"{service}:{operation}")
    if service == "dynamodb":
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return [(action, _table_arn(t, region)) for t in params.get("RequestItems") or {}]
        if operation in ("TransactWriteItems", "TransactGetItems"):
            found = []
            for item in params.get("TransactItems") or []:
                for kind, body in item.items():
                    found.append((_TRANSACT_ACTIONS[kind], _table_arn(body["TableName"], region)))
            return sorted(set(found))
        name = params.get("TableName")
        if not name:
            return [(action, "*")]
        arn = _table_arn(str(name), region)
        if params.get("IndexName"):
            arn = f"{arn}/index/{params['IndexName']}"
        return [(action, arn)]
    if service == "kms":
        key = params.get("KeyId") or params.get("DestinationKeyId")
        return [(action, _key_arn(str(key), region) if key else "*")]
    if service == "secretsmanager":
        secret = params.get("SecretId")
        if not secret:
            return [(action, "*")]
        secret = str(secret)
        if not secret.startswith("arn:"):
            secret = _arn("secretsmanager", region, DEFAULT_ACCOUNT_ID, f"secret:{secret}")
        return [(action, secret)]
    if service == "sqs":
        if params.get("QueueUrl"):
            return [(action, queue_arn_from_url(str(params["QueueUrl"]), region))]
        if params.get("QueueName"):
            return [(action, _arn("sqs", region, DEFAULT_ACCOUNT_ID, str(params["QueueName"])))]
        return [(action, "*")]
    if service == "events" and operation == "PutEvents":
        buses = {str(e.get("EventBusName") or "default") for e in params.get("Entries") or []}
        return sorted(
            (
                action,
                bus
                if bus.startswith("arn:")
                else _arn("events", region, DEFAULT_ACCOUNT_ID, f"event-bus/{bus}"),
            )
            for bus in buses or {"default"}
        )
    if service == "lambda" and params.get("FunctionName"):
        name = str(params["FunctionName"])
        if not name.startswith("arn:"):
            name = _arn("lambda", region, DEFAULT_ACCOUNT_ID, f"function:{name}")
        return [(action, name)]
    if service == "sns":
        topic = params.get("TopicArn") or params.get("TargetArn")
        return [(action, str(topic) if topic else "*")]
    if service == "ssm" and params.get("Name"):
        name = str(params["Name"]).lstrip("/")
        return [(action, _arn("ssm", region, DEFAULT_ACCOUNT_ID, f"parameter/{name}"))]
    if service == "s3" and params.get("Bucket"):
        key = params.get("Key")
        return [(action, f"arn:aws:s3:::{params['Bucket']}" + (f"/{key}" if key else ""))]
    return [(action, "*")]


# --------------------------------------------------------------------------------------------
# The recorder


def _references(raw: Any) -> bool:
    return isinstance(raw, dict) and len(raw) == 1 and ("Ref" in raw or "Fn::GetAtt" in raw)


def declared_env_names(template_path: Path | None = None) -> list[str]:
    """The env vars template.yaml sets to a ``Ref``/``GetAtt`` (Globals and per function).

    Those are the ones that reveal which physical resource stands for which template resource
    in a process; the others (log level, URLs) would only multiply the bindings.
    """
    template = load_template(template_path or _REPO_ROOT / "template.yaml")
    names: set[str] = set()
    glob = (template.get("Globals") or {}).get("Function") or {}
    variables = dict((glob.get("Environment") or {}).get("Variables") or {})
    for resource in (template.get("Resources") or {}).values():
        if isinstance(resource, dict) and resource.get("Type") in (
            "AWS::Serverless::Function",
            "AWS::Lambda::Function",
        ):
            props = resource.get("Properties") or {}
            variables.update((props.get("Environment") or {}).get("Variables") or {})
    names.update(name for name, raw in variables.items() if _references(raw))
    return sorted(names)


class Recorder:
    """Writes each distinct (function, call, binding) once to this process's JSON-lines file."""

    def __init__(self, directory: Path, env_names: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"calls-{os.getpid()}.jsonl"
        self._env_names = env_names
        self._seen: set[str] = set()
        self._file_lock = threading.Lock()

    def _binding(self) -> str:
        env = {name: os.environ[name] for name in self._env_names if name in os.environ}
        line = json.dumps({"env": env}, sort_keys=True)
        binding = hashlib.sha256(line.encode()).hexdigest()[:16]
        if binding not in self._seen:
            self._write(binding, {"binding": binding, "env": env})
        return binding

    def _write(self, key: str, entry: Mapping[str, Any]) -> None:
        with self._file_lock:
            if key in self._seen:
                return
            self._seen.add(key)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")
                out.flush()

    def record(self, function: str, service: str, operation: str, params: Any, region: str) -> None:
        params = params if isinstance(params, Mapping) else {}
        entry: dict[str, Any] = {
            "call": 1,
            "binding": self._binding(),
            "function": function,
            "service": service,
            "operation": operation,
            "requirements": [list(r) for r in requirements(service, operation, params, region)],
        }
        context = params.get("EncryptionContext")
        if service == "kms" and isinstance(context, Mapping):
            entry["encryption_context"] = {str(k): str(v) for k, v in context.items()}
        line = json.dumps(entry, sort_keys=True)
        self._write(line, entry)


def install(directory: str | os.PathLike[str], *, template_path: Path | None = None) -> Recorder:
    """Hook every botocore client created from now on in this process (idempotent)."""
    global _recorder
    with _lock:
        if _recorder is not None:
            return _recorder
        import botocore.session

        recorder = Recorder(Path(directory), declared_env_names(template_path))
        original_create_client = botocore.session.Session.create_client

        def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
            client = original_create_client(self, *args, **kwargs)
            region = client.meta.region_name

            def hook(params: Any = None, model: Any = None, **rest: Any) -> None:
                function = current_function()
                if function is None or model is None:
                    return
                service_model = model.service_model
                service = service_model.signing_name or service_model.endpoint_prefix
                try:
                    recorder.record(function, service, model.name, params, region)
                except Exception as exc:  # a recording bug must surface, not drop a call
                    recorder._write(
                        f"error:{exc!r}",
                        {"error": f"{type(exc).__name__}: {exc}", "function": function},
                    )

            client.meta.events.register("before-parameter-build", hook)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
        threading.Thread.start = _start_inheriting_tag  # type: ignore[method-assign]
        _recorder = recorder
        return recorder


def install_from_env() -> Recorder | None:
    """:func:`install` when ``QBO_AWS_CALL_LOG_DIR`` is set (tests set it; ``make dev`` not)."""
    directory = os.environ.get(ENV_VAR)
    if not directory:
        return None
    return install(directory)

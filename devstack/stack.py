"""The local stack: template.yaml's service running on 127.0.0.1 without Docker.

Why: the service is a handful of Lambda functions glued together by AWS (HTTP API, SQS event
source, EventBridge schedule, DynamoDB, KMS, Secrets Manager). ``sam local`` needs Docker and
emulates neither SQS nor schedules; this module gives developers and integration tests the whole
loop in one process, built from template.yaml itself so it cannot drift from the deployment:

* a moto server as the AWS endpoint (``AWS_ENDPOINT_URL``), holding the table, key, secret,
  queues and bus created from the template's own resource properties;
* the Intuit simulator (``devstack.intuit_sim``) unless real Intuit endpoints are configured;
* an HTTP gateway that turns requests into API Gateway HTTP API payload 2.0 events for the
  routes declared in the template and maps the handler's result back like API Gateway does;
* the Lambda Invoke API as ``sam local start-lambda`` serves it, so ``boto3`` works unchanged;
* an SQS poller with partial batch responses, and the schedules.

One process means one ``os.environ``: the template's Globals environment is set once, before
any handler loads (docs/architecture.md, "The local stack"). Every handler file is ``app.py``,
so each is loaded by file path under its own module name.

This module is the orchestration: it creates the resources, sets the environment and starts
the parts, each in a module of its own: the Lambda event shapes (devstack.events), the function
runtime (devstack.runtime), the HTTP servers (devstack.servers) serving the gateway
(devstack.gateway) and the Lambda Invoke API (devstack.lambda_api), moto (devstack.moto_server),
all behind devstack.local_guard. devstack.process runs the whole stack as a subprocess.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import aws_calls, moto_server
from devstack import template as tpl
from devstack.event_log import EVENT_LOG_QUEUE_SUFFIX, EventLog
from devstack.events import build_scheduled_event, build_sqs_event, parse_batch_item_failures
from devstack.gateway import CompiledRoute, HttpGateway, compile_routes
from devstack.lambda_api import LambdaApi
from devstack.local_guard import LocalOnly, public_host
from devstack.runtime import FunctionRuntime, InvocationResult
from devstack.servers import HOST, HttpServer, PortInUseError, bind_port, check_port_free
from devstack.your_app import PATH as YOUR_APP_PATH
from devstack.your_app import YourApp, with_your_app

log = logging.getLogger("devstack")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
DEFAULT_STATE_DIR = REPO_ROOT / ".devstack"
CONNECT_LINK_TENANT = "local-dev"
EVENTS_RULE_SOURCE = "qbo-connect"
EVENTS_QUEUE_SUFFIX = "events"
#: The secret at the AWS endpoint that describes a stack for ``--attach``.
ATTACH_DESCRIPTION_SUFFIX = "devstack-attach"
WEBHOOK_SECRET_LOGICAL_ID = "WebhookVerifierSecret"
WEBHOOK_TOKEN_ENV = "INTUIT_WEBHOOK_VERIFIER_TOKEN"
WEBHOOK_TIME_SCALE = 0.01
#: The INTUIT_* settings (plus the QuickBooks API base) the simulator provides.
INTUIT_ENDPOINT_KEYS = (
    "INTUIT_AUTHORIZATION_ENDPOINT",
    "INTUIT_TOKEN_ENDPOINT",
    "INTUIT_REVOCATION_ENDPOINT",
    "INTUIT_USERINFO_ENDPOINT",
    "INTUIT_JWKS_URI",
    "INTUIT_ISSUER",
    "QUICKBOOKS_API_BASE_URL",
)
#: Both must be set in the environment to use a real (or external) Intuit instead of the sim.
EXTERNAL_INTUIT_KEYS = ("INTUIT_AUTHORIZATION_ENDPOINT", "INTUIT_TOKEN_ENDPOINT")
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: Variables that could make a client reach real AWS or another endpoint: removed while we run.
_AWS_ENV_REMOVED = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")
#: Resource types the local stack creates (so their physical values come from moto).
_CREATED_TYPES = frozenset(
    {
        "AWS::KMS::Key",
        "AWS::KMS::Alias",
        "AWS::SecretsManager::Secret",
        "AWS::DynamoDB::Table",
        "AWS::SQS::Queue",
        "AWS::Serverless::Function",
        "AWS::Lambda::Function",
    }
)


class StackError(RuntimeError):
    """The stack could not start (the message says which step)."""


# --------------------------------------------------------------------------------------------
# The stack


@dataclass
class _Poller:
    source: tpl.SqsSource
    queue_url: str
    queue_arn: str
    concurrency: int
    thread: threading.Thread | None = None
    active: set[threading.Thread] = field(default_factory=set)


@dataclass
class _ScheduleRunner:
    logical_id: str
    rule_arn: str
    interval: float
    input: str | None
    thread: threading.Thread | None = None


class LocalStack:
    """Everything ``python -m devstack`` runs, usable in-process as a context manager.

    ``start()`` brings the parts up in dependency order and writes
    ``<state_dir>/endpoints.json`` last; ``stop()`` shuts everything down and restores the
    environment variables it changed. In-process use shares ``sys.modules`` with the caller:
    the layer package is imported once per process, so prefer one stack per process (the
    subprocess helper in devstack.process) when real handlers cache settings or clients.
    """

    def __init__(
        self,
        *,
        api_port: int = 3000,
        lambda_port: int = 3001,
        aws_port: int = 5000,
        intuit_port: int = 0,
        state_dir: str | Path | None = None,
        template_path: str | Path = DEFAULT_TEMPLATE,
        parameter_overrides: Mapping[str, str] | None = None,
        auto_approve: bool = False,
        refresh_grace: float = 86400.0,
        sweep_interval: float | None = None,
        schedule: bool = True,
        poller: bool = True,
        stack_name: str = tpl.DEFAULT_STACK_NAME,
        out: Callable[[str], None] | None = None,
        aws_endpoint: str | None = None,
        attach: bool = False,
    ) -> None:
        self.ports = {"--api-port": api_port, "--lambda-port": lambda_port}
        self.aws_port = aws_port
        # An existing AWS-compatible endpoint to use instead of starting moto (it must apply
        # conditional writes atomically, as DynamoDB does: it cannot be patched from here).
        self.aws_endpoint = aws_endpoint.rstrip("/") if aws_endpoint else None
        self.intuit_port = intuit_port
        self.template_path = Path(template_path).resolve()
        self.root = self.template_path.parent
        self.state_dir = Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR
        self.parameter_overrides = dict(parameter_overrides or {})
        self._given_overrides = dict(self.parameter_overrides)
        self.auto_approve = auto_approve
        self.refresh_grace = refresh_grace
        self.sweep_interval = sweep_interval
        #: A second "container": this process's own Lambda API and module state over the
        #: resources and the simulator of a stack already running at ``aws_endpoint``. The
        #: first stack runs the schedules and pollers; this one runs none.
        self.attach = attach
        self.schedule_enabled = schedule and not attach
        self.poller_enabled = poller and not attach
        self.described_api_url = ""
        self.stack_name = stack_name
        self._out = out or (lambda line: print(line, flush=True))

        self.template: dict[str, Any] = {}
        self.region = tpl.DEFAULT_REGION
        self.account_id = tpl.DEFAULT_ACCOUNT_ID
        self.physical: dict[str, dict[str, str]] = {}
        self.functions: dict[str, FunctionRuntime] = {}
        self.routes: list[CompiledRoute] = []
        self.endpoints: dict[str, Any] = {}
        self.intuit_env: dict[str, str] = {}
        self.simulator: Any = None
        self.client_id = ""
        self.resolver: tpl.Resolver | None = None
        self.api_url = ""
        self.your_app_url = ""
        self.lambda_url = ""
        self.aws_url = ""
        self.events_queue_url = ""
        self._event_log_queue_url = ""
        #: The webhook verifier token in the local secret: INTUIT_WEBHOOK_VERIFIER_TOKEN (a real
        #: Intuit app's, for deliveries through a tunnel) or a fresh one the simulator signs with.
        self.webhook_verifier_token = os.environ.get(
            WEBHOOK_TOKEN_ENV, ""
        ).strip() or secrets.token_urlsafe(32)

        self._moto: Any = None
        self._api: HttpServer | None = None
        self._lambda: HttpServer | None = None
        self._stop = threading.Event()
        self._pollers: list[_Poller] = []
        self._schedules: dict[str, _ScheduleRunner] = {}
        self._env_saved: dict[str, str | None] = {}
        self._sys_path_added: list[str] = []
        self._session: Any = None
        self._started = False
        self._background: set[threading.Thread] = set()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def say(self, line: str) -> None:
        self._out(f"devstack: {line}")

    def start(self) -> LocalStack:
        """Bring everything up; on any failure, stop what was started and re-raise."""
        began = time.monotonic()
        # Tests set QBO_AWS_CALL_LOG_DIR to record each function's AWS calls (tests/iam).
        aws_calls.install_from_env()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        self.say(f"up in {time.monotonic() - began:.2f}s")
        return self

    def _start(self) -> None:
        self.template = tpl.load_template(self.template_path)
        fn_specs = tpl.functions(self.template)
        self.routes = compile_routes(tpl.http_routes(self.template))
        # Fail fast on taken ports, before anything else starts.
        sockets = {flag: bind_port(flag, port) for flag, port in self.ports.items()}
        try:
            if self.aws_endpoint is None:
                check_port_free("--aws-port", self.aws_port)
            check_port_free("--intuit-port", self.intuit_port)
        except PortInUseError:
            for sock in sockets.values():
                sock.close()
            raise
        parameters = tpl.parameter_values(self.template, self.parameter_overrides)
        # A tunnel (PublicBaseUrl) brings real Intuit traffic to the gateway under its own name.
        public = public_host(parameters.get("PublicBaseUrl", ""))
        gateway = LocalOnly(
            with_your_app(HttpGateway(self), YourApp(self.root / "README.md", self._return_key)),
            name="HTTP gateway",
            public=[public] if public else [],
            navigations=True,
        )
        lambda_api = LocalOnly(LambdaApi(self), name="Lambda invoke API")
        self._api = HttpServer("devstack-api", sockets["--api-port"], gateway)
        self._lambda = HttpServer("devstack-lambda", sockets["--lambda-port"], lambda_api)
        self.api_url, self.lambda_url = self._api.url, self._lambda.url
        self.your_app_url = self.api_url + YOUR_APP_PATH
        if not self.attach:
            # The local stand-in for your app's return page is always an allowed return URL.
            given = tpl.parameter_values(self.template, self._given_overrides)
            allowed = given.get("AllowedReturnUrls", "")
            self.parameter_overrides["AllowedReturnUrls"] = ",".join(
                filter(None, (allowed, self.your_app_url))
            )

        (self.state_dir / "endpoints.json").unlink(missing_ok=True)
        if self.attach and self.aws_endpoint is None:
            raise StackError("--attach needs --aws-endpoint: the AWS endpoint of the first stack")
        self._start_moto()
        if self.attach:
            self._attach_to_description()
        else:
            public_base = parameters.get("PublicBaseUrl", "") or self.api_url
            client_id, client_secret = self._client_credentials()
            self.client_id = client_id
            self._start_intuit(client_id, client_secret, public_base)
            self._create_resources(fn_specs, client_id, client_secret)
            self._publish_description()
        self._set_function_env()
        self._add_layers_to_path()
        for logical_id, spec in fn_specs.items():
            self.functions[logical_id] = FunctionRuntime(
                logical_id,
                code_dir=(self.root / spec["code_uri"]).resolve(),
                handler=spec["handler"],
                timeout=spec["timeout"],
                memory_size=spec["memory_size"],
                physical_name=self.physical[logical_id]["Ref"],
                arn=self.physical[logical_id]["Arn"],
            )
        self._api.start()
        self._lambda.start()
        self.say(f"HTTP gateway on {self.api_url} ({len(self.routes)} routes)")
        self.say(f"Lambda invoke API on {self.lambda_url}")
        if self.poller_enabled:
            self._start_pollers()
        if self.schedule_enabled:
            self._start_schedules()
        if self._event_log_queue_url:
            EventLog(self.client("sqs"), self._event_log_queue_url, self.say, self._stop).start()
        self._write_endpoints()

    def stop(self) -> None:
        """Stop servers and threads (bounded waits), then restore env and sys.path."""
        self._stop.set()
        for poller in self._pollers:
            if poller.thread is not None:
                poller.thread.join(timeout=5)
            for batch in list(poller.active):
                batch.join(timeout=2)
        for runner in self._schedules.values():
            if runner.thread is not None:
                runner.thread.join(timeout=5)
        for server in (self._api, self._lambda):
            if server is not None:
                server.stop()
        self._api = self._lambda = None
        if self.simulator is not None:
            with contextlib.suppress(Exception):
                self.simulator.stop()
            self.simulator = None
        if self._moto is not None:
            with contextlib.suppress(Exception):
                self._moto.stop()
            self._moto = None
        if self._started:
            (self.state_dir / "endpoints.json").unlink(missing_ok=True)
        for name in list(self.functions):
            sys.modules.pop(self.functions[name].module_name, None)
        for path in self._sys_path_added:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)
        self._sys_path_added = []
        for key, value in self._env_saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env_saved = {}
        if self._started:
            self.say("stopped")
        self._started = False

    def wait(self) -> None:
        """Block until :meth:`stop` is called from elsewhere."""
        self._stop.wait()

    # ------------------------------------------------------------------ environment

    def _setenv(self, key: str, value: str | None) -> None:
        if key not in self._env_saved:
            self._env_saved[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def _start_moto(self) -> None:
        import boto3

        if self.aws_endpoint is not None:
            self.aws_url = self.aws_endpoint
            self.say(f"using the AWS endpoint {self.aws_url} (no moto server started)")
        else:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
            self._moto = moto_server.in_thread(self.aws_port)
            self.say(f"starting moto server on {HOST}:{self.aws_port or 'any free port'}")
            self._moto.start()
            if self._moto.error is not None:
                self._moto = None
                raise PortInUseError("--aws-port", self.aws_port)
            host, port = self._moto.get_host_and_port()
            self.aws_url = f"http://{host}:{port}"
        self.region = os.environ.get("AWS_DEFAULT_REGION") or tpl.DEFAULT_REGION
        self._setenv("AWS_ENDPOINT_URL", self.aws_url)
        for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL_")]:
            self._setenv(key, None)  # a service-specific endpoint would bypass moto
        self._setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", None)
        for key, value in DUMMY_CREDENTIALS.items():
            self._setenv(key, value)
        for key in _AWS_ENV_REMOVED:
            self._setenv(key, None)
        self._setenv("AWS_DEFAULT_REGION", self.region)
        self._setenv("AWS_REGION", self.region)
        self._session = boto3.session.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        )
        if self._moto is not None:
            self.say(f"moto server on {self.aws_url}")

    def client(self, service: str) -> Any:
        """A boto3 client for the local AWS endpoint."""
        if self._session is None:
            raise StackError("stack is not started")
        return self._session.client(service, endpoint_url=self.aws_url)

    def _return_key(self) -> str:
        """The return signing key, read as the README tells an application to read it."""
        secret_id = self.physical.get("ReturnSigningSecret", {}).get("Ref", "")
        answer = self.client("secretsmanager").get_secret_value(SecretId=secret_id)
        return str(answer["SecretString"])

    def _client_credentials(self) -> tuple[str, str]:
        env_id = os.environ.get("INTUIT_CLIENT_ID", "")
        env_secret = os.environ.get("INTUIT_CLIENT_SECRET", "")
        if env_id and env_secret:
            return env_id, env_secret
        return f"devstack-{secrets.token_hex(6)}", secrets.token_urlsafe(24)

    def _start_intuit(self, client_id: str, client_secret: str, public_base: str) -> None:
        if all(os.environ.get(k) for k in EXTERNAL_INTUIT_KEYS):
            self.intuit_env = {k: os.environ[k] for k in INTUIT_ENDPOINT_KEYS if os.environ.get(k)}
            self.say(f"using Intuit endpoints from the environment ({len(self.intuit_env)} set)")
            return
        from devstack.intuit_sim import IntuitSimulator

        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": self.intuit_port,
            "clients": {client_id: client_secret},
            "redirect_uris": [public_base.rstrip("/") + "/callback"],
            "auto_approve": self.auto_approve,
            "refresh_grace_seconds": self.refresh_grace,
            "webhook_url": f"{self.api_url}/webhooks",
            "webhook_verifier_token": self.webhook_verifier_token,
            # Intuit's retry schedule compressed a hundredfold (10 s -> 0.1 s, 6 h -> 3.6 min).
            "webhook_time_scale": WEBHOOK_TIME_SCALE,
        }
        accepted = inspect.signature(IntuitSimulator).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        self.simulator = IntuitSimulator(**kwargs)
        # Guarded like the stack's own servers (its consent page is reached by navigation).
        self.simulator._wsgi = LocalOnly(  # type: ignore[method-assign]
            self.simulator._wsgi, name="Intuit simulator", navigations=True
        )
        try:
            self.simulator.start()
        except OSError as exc:
            self.simulator = None
            raise PortInUseError(
                "--intuit-port", self.intuit_port, exc.strerror or str(exc)
            ) from None
        self.intuit_env = dict(self.simulator.endpoints)
        mode = "auto-approve" if self.auto_approve else "consent page"
        self.say(f"Intuit simulator on {self.simulator.base_url} ({mode})")

    # ------------------------------------------------------------------ resources

    def _name(self, logical_id: str) -> str:
        return f"{self.stack_name}-{logical_id}"

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    def _lookup(self, logical_id: str, attribute: str | None) -> str:
        entry = self.physical.get(logical_id)
        if entry is None:
            resources = self.template.get("Resources") or {}
            resource = resources.get(logical_id)
            if resource is None and logical_id.removesuffix("Role") in self.functions_declared():
                # The role SAM generates for a function (``<Function>Role``, named in key
                # policies): moto enforces no IAM, a stable placeholder ARN is all it needs.
                name = self._name(logical_id)
                return name if attribute is None else f"arn:aws:iam::{self.account_id}:role/{name}"
            if resource is None:
                raise tpl.TemplateError(f"unknown resource {logical_id}")
            if resource.get("Type") in _CREATED_TYPES:
                raise tpl.TemplateError(f"{logical_id} is not created yet")
            # A resource the local stack does not create (alarms, log groups, the API...):
            # a stable placeholder so Sub/Ref elsewhere in the template still evaluate.
            entry = {"Ref": self._name(logical_id), "Arn": self._arn("local", logical_id)}
        key = attribute or "Ref"
        if key not in entry:
            raise tpl.TemplateError(f"no attribute {key} known locally for {logical_id}")
        return entry[key]

    def _resolver(self) -> tpl.Resolver:
        """Evaluates the template's intrinsics against this stack's physical resources."""
        return tpl.Resolver(
            self.template,
            self._lookup,
            self.parameter_overrides,
            stack_name=self.stack_name,
            region=self.region,
            account_id=self.account_id,
        )

    def functions_declared(self) -> set[str]:
        return set(tpl.functions(self.template))

    def _create_resources(
        self, fn_specs: Mapping[str, Any], client_id: str, client_secret: str
    ) -> None:
        self.resolver = self._resolver()
        resolve = self.resolver
        resources = self.template.get("Resources") or {}
        by_type: dict[str, list[str]] = {}
        for logical_id, resource in resources.items():
            by_type.setdefault(resource.get("Type", ""), []).append(logical_id)
        for logical_id in fn_specs:
            name = self._name(logical_id)
            self.physical[logical_id] = {
                "Ref": name,
                "Arn": self._arn("lambda", f"function:{name}"),
            }
        kms = self.client("kms")
        for logical_id in by_type.get("AWS::KMS::Key", []):
            props = resolve(resources[logical_id].get("Properties") or {})
            meta = kms.create_key(
                Description=props.get("Description", logical_id),
                KeySpec=props.get("KeySpec", "SYMMETRIC_DEFAULT"),
                KeyUsage=props.get("KeyUsage", "ENCRYPT_DECRYPT"),
            )["KeyMetadata"]
            if props.get("EnableKeyRotation"):
                with contextlib.suppress(Exception):
                    kms.enable_key_rotation(KeyId=meta["KeyId"])
            self.physical[logical_id] = {"Ref": meta["KeyId"], "Arn": meta["Arn"]}
            self.say(f"created KMS key {logical_id} ({meta['KeyId']})")
        for logical_id in by_type.get("AWS::KMS::Alias", []):
            props = resolve(resources[logical_id].get("Properties") or {})
            kms.create_alias(AliasName=props["AliasName"], TargetKeyId=props["TargetKeyId"])
            self.physical[logical_id] = {"Ref": props["AliasName"]}
            self.say(f"created KMS alias {props['AliasName']}")
        sm = self.client("secretsmanager")
        for logical_id in by_type.get("AWS::SecretsManager::Secret", []):
            props = resources[logical_id].get("Properties") or {}
            name = props.get("Name") or self._name(logical_id)
            generate = props.get("GenerateSecretString")
            if logical_id == WEBHOOK_SECRET_LOGICAL_ID:
                secret_string = self.webhook_verifier_token
                origin = WEBHOOK_TOKEN_ENV if os.environ.get(WEBHOOK_TOKEN_ENV) else "generated"
                what = f"verifier token {origin}; endpoints.json"
            elif isinstance(generate, dict):
                # As CloudFormation does: a fresh random value, never a fixed one.
                secret_string = generated_secret_string(resolve(generate))
                what = "generated value"
            else:
                secret_string = json.dumps({"client_id": client_id, "client_secret": client_secret})
                what = f"client_id {client_id}"
            arn = sm.create_secret(
                Name=resolve(name),
                Description=str(resolve(props.get("Description", logical_id))),
                SecretString=secret_string,
            )["ARN"]
            self.physical[logical_id] = {"Ref": arn, "Id": arn, "Arn": arn}
            self.say(f"created secret {logical_id} ({what})")
        ddb = self.client("dynamodb")
        for logical_id in by_type.get("AWS::DynamoDB::Table", []):
            props = resources[logical_id].get("Properties") or {}
            name = resolve(props.get("TableName") or self._name(logical_id))
            description = tpl.create_table_from_template(
                ddb, self.template, name, logical_id=logical_id, resolve=resolve
            )
            self.physical[logical_id] = {
                "Ref": name,
                "Arn": description["TableArn"],
                "StreamArn": description.get("LatestStreamArn", ""),
            }
            indexes = [i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])]
            self.say(f"created table {name} (indexes: {', '.join(indexes) or 'none'})")
        self._create_queues(resources, by_type.get("AWS::SQS::Queue", []))
        self._create_event_bus()

    def _create_queues(self, resources: Mapping[str, Any], queue_ids: list[str]) -> None:
        """Create queues so that a dead-letter queue exists before the queue redriving to it."""
        assert self.resolver is not None
        sqs = self.client("sqs")
        deps: dict[str, set[str]] = {}
        for logical_id in queue_ids:
            redrive = (resources[logical_id].get("Properties") or {}).get("RedrivePolicy") or {}
            target = tpl._logical_id_of(redrive.get("deadLetterTargetArn"))
            deps[logical_id] = {target} & set(queue_ids) if target else set()
        pending = list(queue_ids)
        while pending:
            ready = [lid for lid in pending if not (deps[lid] & set(pending))]
            if not ready:
                raise StackError(f"queues redrive to each other: {pending}")
            for logical_id in ready:
                props = self.resolver(resources[logical_id].get("Properties") or {})
                self._create_queue(sqs, logical_id, props)
                pending.remove(logical_id)

    def _create_queue(self, sqs: Any, logical_id: str, props: Mapping[str, Any]) -> None:
        fifo = str(props.get("FifoQueue", "")).lower() == "true"
        name = props.get("QueueName") or self._name(logical_id) + (".fifo" if fifo else "")
        attributes: dict[str, str] = {}
        for key in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "MaximumMessageSize",
            "ReceiveMessageWaitTimeSeconds",
            "KmsMasterKeyId",
            "KmsDataKeyReusePeriodSeconds",
            "SqsManagedSseEnabled",
            "FifoQueue",
            "ContentBasedDeduplication",
        ):
            if key in props:
                attributes[key] = tpl._stringify(props[key])
        if props.get("RedrivePolicy"):
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.physical[logical_id] = {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}
        extra = (
            f", visibility {attributes['VisibilityTimeout']}s"
            if "VisibilityTimeout" in (attributes)
            else ""
        )
        self.say(f"created queue {name}{extra}")

    def _create_event_bus(self) -> None:
        """The lifecycle-event bus, plus a rule copying our events into an SQS queue.

        The copy makes events observable in tests (moto delivers to SQS targets). No schedule
        rule is created in moto: a rule with a schedule target breaks moto's put_events, and
        this stack runs the schedules itself.
        """
        assert self.resolver is not None
        bus = self.resolver.parameters.get("EventBusName", "default") or "default"
        events = self.client("events")
        if bus != "default":
            events.create_event_bus(Name=bus)
            self.say(f"created event bus {bus}")
        sqs = self.client("sqs")
        name = f"{self.stack_name}-{EVENTS_QUEUE_SUFFIX}"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        rule = f"{self.stack_name}-lifecycle-events"
        events.put_rule(
            Name=rule,
            EventPattern=json.dumps({"source": [EVENTS_RULE_SOURCE]}),
            EventBusName=bus,
            State="ENABLED",
        )
        # A second target, read only by the dev log's EventLog (one line per event).
        log_url = sqs.create_queue(QueueName=f"{self.stack_name}-{EVENT_LOG_QUEUE_SUFFIX}")[
            "QueueUrl"
        ]
        log_arn = sqs.get_queue_attributes(QueueUrl=log_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_targets(
            Rule=rule,
            EventBusName=bus,
            Targets=[{"Id": "events-queue", "Arn": arn}, {"Id": "dev-log", "Arn": log_arn}],
        )
        self._event_log_queue_url = log_url
        self.events_queue_url = url
        self.say(f"events with source {EVENTS_RULE_SOURCE!r} on bus {bus} are copied to {name}")

    # ------------------------------------------------------------------ a second container

    def _description_name(self) -> str:
        return f"{self.stack_name}-{ATTACH_DESCRIPTION_SUFFIX}"

    def _publish_description(self) -> None:
        """Leave what a second process needs to run the same functions over the same resources
        at the AWS endpoint itself (a secret: moto's Parameter Store caps values at 4 KB)."""
        description = {
            "physical": self.physical,
            "intuit_env": self.intuit_env,
            "events_queue_url": self.events_queue_url,
            "api_url": self.api_url,
            "webhook_verifier_token": self.webhook_verifier_token,
        }
        sm = self.client("secretsmanager")
        try:
            sm.create_secret(
                Name=self._description_name(),
                Description="devstack: the first stack's resources, for devstack --attach",
                SecretString=json.dumps(description),
            )
        except sm.exceptions.ResourceExistsException:  # a stack started here before this one
            sm.put_secret_value(
                SecretId=self._description_name(), SecretString=json.dumps(description)
            )

    def _attach_to_description(self) -> None:
        """Take the first stack's resources and Intuit endpoints from the AWS endpoint."""
        try:
            raw = self.client("secretsmanager").get_secret_value(SecretId=self._description_name())[
                "SecretString"
            ]
        except Exception as exc:
            raise StackError(
                f"no stack to attach to at {self.aws_url}: start one there first "
                f"({type(exc).__name__})"
            ) from None
        description = json.loads(raw)
        self.physical = description["physical"]
        self.intuit_env = dict(description["intuit_env"])
        self.events_queue_url = description["events_queue_url"]
        self.described_api_url = description["api_url"]
        self.webhook_verifier_token = description["webhook_verifier_token"]
        self.resolver = self._resolver()
        self.say(f"attached to the stack at {self.aws_url} ({len(self.physical)} resources)")

    def _set_function_env(self) -> None:
        assert self.resolver is not None
        env = tpl.globals_env(self.template, self.resolver)
        external = self.simulator is None
        for key, value in env.items():
            if external and key in INTUIT_ENDPOINT_KEYS and os.environ.get(key):
                continue  # an explicitly configured Intuit endpoint wins over the default
            self._setenv(key, value)
        if not env.get("PUBLIC_BASE_URL"):
            # Attached: the first stack's, which the simulator registered as redirect URI.
            base = self.described_api_url or self.api_url
            if external and not self.described_api_url:
                # A real Intuit app takes an http redirect URI on localhost only, never an IP:
                # the README says to register http://localhost:3000/callback, so send that.
                base = base.replace(f"http://{HOST}:", "http://localhost:", 1)
            self._setenv("PUBLIC_BASE_URL", base)
        self._setenv("POWERTOOLS_TRACE_DISABLED", "true")
        for key, value in self.intuit_env.items():
            self._setenv(key, value)
        self.intuit_env = {
            k: os.environ[k]
            for k in sorted(os.environ)
            if (k.startswith("INTUIT_") and "CLIENT" not in k) or k == "QUICKBOOKS_API_BASE_URL"
        }
        self.say(f"function environment set ({len(env)} variables from Globals)")

    def _add_layers_to_path(self) -> None:
        """Put each layer's code first on sys.path, as /opt/python is in Lambda."""
        for resource in (self.template.get("Resources") or {}).values():
            if resource.get("Type") not in (
                "AWS::Serverless::LayerVersion",
                "AWS::Lambda::LayerVersion",
            ):
                continue
            props = resource.get("Properties") or {}
            content = props.get("ContentUri") or (props.get("Content") or {}).get("S3Key")
            if not isinstance(content, str):
                continue
            base = (self.root / content).resolve()
            # A prebuilt layer keeps its code under python/; ours is the package dir itself.
            path = base / "python" if (base / "python").is_dir() else base
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
                self._sys_path_added.append(str(path))

    # ------------------------------------------------------------------ functions

    def resolve_function(self, name: str) -> FunctionRuntime | None:
        """A function by logical id, physical name, or ARN ending in either (``:qualifier`` ok)."""
        if ":function:" in name:
            name = name.split(":function:", 1)[1].split(":", 1)[0]
        if name in self.functions:
            return self.functions[name]
        for runtime in self.functions.values():
            if name == runtime.physical_name:
                return runtime
        return None

    def function_arn(self, name: str) -> str:
        """The ARN a function name stands for (itself when it is one)."""
        return name if name.startswith("arn:") else self._arn("lambda", f"function:{name}")

    @property
    def api_port(self) -> int:
        return self._api.port if self._api is not None else 0

    def invoke(self, name: str, payload: Any = None) -> InvocationResult:
        """Invoke a function in-process (no HTTP) with the same semantics as the Invoke API."""
        runtime = self.resolve_function(name)
        if runtime is None:
            raise KeyError(f"no function {name}")
        return runtime.invoke({} if payload is None else payload)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "functions": {
                lid: {"invocations": rt.stats.invocations, "errors": rt.stats.errors}
                for lid, rt in self.functions.items()
            },
            "pollers": [p.source.queue_logical_id for p in self._pollers],
            "schedules": {lid: r.interval for lid, r in self._schedules.items()},
        }

    def run_schedule_now(self, logical_id: str) -> InvocationResult | None:
        """Run a scheduled function now with its EventBridge event; None if it has no schedule."""
        runner = self._schedule_runner(logical_id)
        if runner is None:
            return None
        return self.functions[logical_id].invoke(self._schedule_event(runner))

    # ------------------------------------------------------------------ schedules

    def _schedule_runner(self, logical_id: str) -> _ScheduleRunner | None:
        if logical_id in self._schedules:
            return self._schedules[logical_id]
        for schedule in tpl.schedules(self.template):
            if schedule.logical_id == logical_id:
                return self._make_runner(schedule)
        return None

    def _make_runner(self, schedule: tpl.Schedule) -> _ScheduleRunner:
        assert self.resolver is not None
        rule = f"{self.stack_name}-{schedule.logical_id}{schedule.event_name}"
        expression = str(self.resolver(schedule.schedule))
        if self.sweep_interval is not None:
            interval = float(self.sweep_interval)
        else:
            try:
                interval = tpl.parse_rate(expression)
            except tpl.TemplateError:
                interval = 0.0  # cron(...): run on demand only (see --sweep-interval)
        return _ScheduleRunner(
            schedule.logical_id, self._arn("events", f"rule/{rule}"), interval, schedule.input
        )

    def _schedule_event(self, runner: _ScheduleRunner) -> Any:
        if runner.input:
            return json.loads(runner.input)
        return build_scheduled_event(
            runner.rule_arn, region=self.region, account_id=self.account_id
        )

    def _start_schedules(self) -> None:
        for schedule in tpl.schedules(self.template):
            if not schedule.enabled:
                continue
            runner = self._make_runner(schedule)
            self._schedules[schedule.logical_id] = runner
            if runner.interval <= 0:
                self.say(f"schedule of {schedule.logical_id} is not a rate(): on demand only")
                continue
            runner.thread = threading.Thread(
                target=self._schedule_loop,
                args=(runner,),
                name=f"schedule-{schedule.logical_id}",
                daemon=True,
            )
            runner.thread.start()
            self.say(f"schedule: {schedule.logical_id} every {runner.interval:g}s")

    def _schedule_loop(self, runner: _ScheduleRunner) -> None:
        # EventBridge fires the first time one interval after the rule is created.
        while not self._stop.wait(runner.interval):
            result = self.functions[runner.logical_id].invoke(self._schedule_event(runner))
            if result.ok:
                log.info("scheduled run of %s done", runner.logical_id)
            else:
                log.warning("scheduled run of %s failed", runner.logical_id)

    # ------------------------------------------------------------------ SQS pollers

    def _start_pollers(self) -> None:
        assert self.resolver is not None
        for source in tpl.sqs_sources(self.template):
            queue = self.physical.get(source.queue_logical_id)
            if queue is None or "QueueUrl" not in queue:
                raise StackError(f"queue {source.queue_logical_id} was not created")
            concurrency = tpl.sqs_max_concurrency(
                self.template,
                source.function_logical_id,
                source.queue_logical_id,
                self.resolver,
            )
            poller = _Poller(source, queue["QueueUrl"], queue["Arn"], max(1, concurrency or 5))
            poller.thread = threading.Thread(
                target=self._poll_loop,
                args=(poller, self.client("sqs")),
                name=f"sqs-{source.queue_logical_id}",
                daemon=True,
            )
            self._pollers.append(poller)
            poller.thread.start()
            self.say(
                f"SQS poller: {queue['QueueName']} -> {source.function_logical_id} "
                f"(batch {source.batch_size}, concurrency {poller.concurrency})"
            )

    def _poll_loop(self, poller: _Poller, sqs: Any) -> None:
        slots = threading.BoundedSemaphore(poller.concurrency)
        while not self._stop.is_set():
            if not slots.acquire(timeout=0.5):
                continue
            try:
                response = sqs.receive_message(
                    QueueUrl=poller.queue_url,
                    MaxNumberOfMessages=min(10, poller.source.batch_size),
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:
                slots.release()
                if not self._stop.is_set():
                    log.warning("SQS receive failed: %s", exc)
                    self._stop.wait(1)
                continue
            messages = response.get("Messages") or []
            if not messages or self._stop.is_set():
                # Stopping: leave them; they come back after their visibility timeout.
                slots.release()
                continue

            def process(batch: list[dict[str, Any]] = messages) -> None:
                try:
                    self._process_batch(poller, sqs, batch)
                except Exception:
                    log.exception("SQS batch handling failed")
                finally:
                    poller.active.discard(threading.current_thread())
                    slots.release()

            thread = threading.Thread(target=process, name="sqs-batch", daemon=True)
            poller.active.add(thread)
            thread.start()

    def _process_batch(self, poller: _Poller, sqs: Any, messages: list[dict[str, Any]]) -> None:
        source = poller.source
        event = build_sqs_event(messages, poller.queue_arn, self.region)
        result = self.functions[source.function_logical_id].invoke(event)
        if not result.ok:
            log.warning(
                "%s failed a batch of %d: messages return after the visibility timeout",
                source.function_logical_id,
                len(messages),
            )
            return
        done = messages
        if source.report_batch_item_failures:
            failed = parse_batch_item_failures(result.payload, (m["MessageId"] for m in messages))
            if failed is None:
                log.warning("%s returned an invalid batch response", source.function_logical_id)
                return
            done = [m for m in messages if m["MessageId"] not in failed]
            if failed:
                log.info(
                    "%s: %d of %d messages failed",
                    source.function_logical_id,
                    len(failed),
                    len(messages),
                )
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            sqs.delete_message_batch(
                QueueUrl=poller.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )

    # ------------------------------------------------------------------ state

    def _write_endpoints(self) -> None:
        queues = {
            lid: entry["QueueUrl"] for lid, entry in self.physical.items() if "QueueUrl" in entry
        }
        table_id = tpl.TABLE_LOGICAL_ID
        self.endpoints = {
            "api": self.api_url,
            "lambda": self.lambda_url,
            "aws": self.aws_url,
            "intuit": self.simulator.base_url if self.simulator is not None else "",
            "intuit_env": dict(self.intuit_env),
            "events_queue": self.events_queue_url,
            "table": self.physical.get(table_id, {}).get("Ref", ""),
            "functions": {lid: rt.physical_name for lid, rt in self.functions.items()},
            "queues": queues,
            "secret": self.physical.get("IntuitClientSecret", {}).get("Ref", ""),
            "return_signing_secret": self.physical.get("ReturnSigningSecret", {}).get("Ref", ""),
            "key": self.physical.get("TokenKey", {}).get("Arn", ""),
            "event_bus": os.environ.get("EVENT_BUS_NAME", "default"),
            "region": self.region,
            "pid": os.getpid(),
            "webhook_url": f"{self.api_url}/webhooks",
            "webhook_verifier_token": self.webhook_verifier_token,
            "your_app": self.your_app_url,
        }
        if self.simulator is not None:
            self.endpoints["simulator"] = self._simulator_trials()
        # It holds the verifier token: readable by this user only (directory 0700, file 0600).
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a shared directory we do not own stays as it is
            os.chmod(self.state_dir, 0o700)
        target = self.state_dir / "endpoints.json"
        tmp = target.with_suffix(f".json.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(json.dumps(self.endpoints, indent=2) + "\n")
        os.replace(tmp, target)
        self.say(f"wrote {target}")

    def _simulator_trials(self) -> dict[str, Any]:
        """What local trials need from the simulator: the app's client id, a refresh token.

        ``connections import`` adopts refresh tokens made elsewhere; locally they come from the
        simulator's ``POST /_sim/issue-tokens``, which creates a grant as if a user had
        consented (to the simulator's default company unless ``realm_id`` names another).
        """
        assert self.simulator is not None
        url = f"{self.simulator.base_url}/_sim/issue-tokens"
        body = json.dumps({"client_id": self.client_id})
        return {
            "client_id": self.client_id,
            "issue_tokens_url": url,
            "issue_tokens_body": {"client_id": self.client_id},
            "issue_tokens_curl": (
                f"curl -s -X POST {url} -H 'Content-Type: application/json' -d '{body}'"
            ),
            "issue_tokens_note": (
                'add "realm_id" to the body to choose the company; the answer\'s refresh_token '
                "goes in the refresh_token column of a `connections import` file"
            ),
        }

    def connect_link(self) -> tuple[str, str | None]:
        """A fresh connect link from ConnectionsFunction, or the bare /connect and why not."""
        fallback = f"{self.api_url}/connect"
        try:
            result = self.invoke(
                "ConnectionsFunction",
                {
                    "action": "create_connect_link",
                    "tenant_id": CONNECT_LINK_TENANT,
                    "return_url": self.your_app_url,
                },
            )
        except KeyError:
            return fallback, "no ConnectionsFunction"
        if not result.ok:
            assert result.error is not None
            return fallback, result.error.get("errorType", "function error")
        payload = result.payload
        if isinstance(payload, dict) and isinstance(payload.get("url"), str):
            return payload["url"], None
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            return fallback, str(payload["error"].get("code", "error"))
        return fallback, "no url in the response"


def generated_secret_string(spec: Mapping[str, Any]) -> str:
    """A random value shaped like CloudFormation's ``GenerateSecretString`` makes it.

    Honours PasswordLength (default 32), ExcludePunctuation, ExcludeCharacters and, with
    SecretStringTemplate + GenerateStringKey, a JSON object holding the value.
    """
    import string

    length = int(spec.get("PasswordLength", 32))
    alphabet = string.ascii_letters + string.digits
    if not _truthy(spec.get("ExcludePunctuation")):
        alphabet += string.punctuation
    excluded = str(spec.get("ExcludeCharacters", ""))
    alphabet = "".join(c for c in alphabet if c not in excluded)
    value = "".join(secrets.choice(alphabet) for _ in range(length))
    template = spec.get("SecretStringTemplate")
    key = spec.get("GenerateStringKey")
    if template and key:
        data = json.loads(str(template))
        data[str(key)] = value
        return json.dumps(data)
    return value


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"

"""Read template.yaml the way the local stack and the tests need it.

Why this module exists: tests and the local stack build their resources from template.yaml's
own properties, so that what runs locally cannot drift from what ``sam deploy`` creates.
Everything here is a pure function of the parsed template (plus, where intrinsic functions must
be evaluated, an explicit :class:`Resolver`): importing it has no side effects and
nothing here talks to AWS except :func:`create_table_from_template`, which takes its client.

The YAML loader understands CloudFormation's short-form tags (``!Ref``, ``!Sub``, ``!GetAtt``...)
and turns them into their long form (``{"Ref": ...}``, ``{"Fn::Sub": ...}``), which is what
every function below works on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

DEFAULT_STACK_NAME = "qbo-connect-local"
DEFAULT_REGION = "us-east-1"
#: moto's default account: ARNs built here must match the ones moto builds.
DEFAULT_ACCOUNT_ID = "123456789012"
TABLE_LOGICAL_ID = "ConnectionsTable"

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_REGION",
    "DEFAULT_STACK_NAME",
    "TABLE_LOGICAL_ID",
    "HttpRoute",
    "Resolver",
    "Schedule",
    "SqsSource",
    "TemplateError",
    "create_table_from_template",
    "functions",
    "globals_env",
    "http_routes",
    "load_template",
    "parameter_values",
    "parse_rate",
    "schedules",
    "sqs_max_concurrency",
    "sqs_sources",
    "table_create_kwargs",
]


class TemplateError(ValueError):
    """template.yaml holds something this module cannot interpret (named in the message)."""


# --------------------------------------------------------------------------------------------
# Loading


# libyaml's parser (CSafeLoader) reads template.yaml in 0.04 s against 0.26 s for the pure-Python
# one, and every local stack reads it at start: the C loader when PyYAML was built with it.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CfnLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader plus CloudFormation's short-form intrinsic tags.

    A subclass, so registering the tag constructors does not change ``yaml.SafeLoader`` for the
    rest of the process (no import side effects).
    """


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"unsupported node for !{tag_suffix}")
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # The short form "Resource.Attribute" splits at the first dot only
        # (attributes such as Endpoint.Address contain dots themselves).
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)

# CloudFormation treats unquoted dates as strings (AWSTemplateFormatVersion: 2010-09-09), and so
# must we: drop the timestamp resolver from our loader only.
_CfnLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_template(path: str | Path = "template.yaml") -> dict[str, Any]:
    """Parse a SAM/CloudFormation template into plain dicts with long-form intrinsics."""
    text = Path(path).read_text(encoding="utf-8")
    return loads_template(text)


def loads_template(text: str) -> dict[str, Any]:
    """Like :func:`load_template`, from a string (tests build small templates this way)."""
    data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - _CfnLoader is a SafeLoader
    if not isinstance(data, dict):
        raise TemplateError("a template must be a YAML mapping")
    return data


def _resources(template: Mapping[str, Any]) -> dict[str, Any]:
    resources = template.get("Resources") or {}
    if not isinstance(resources, dict):
        raise TemplateError("Resources must be a mapping")
    return resources


def _resource(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    try:
        resource = _resources(template)[logical_id]
    except KeyError:
        raise TemplateError(f"template has no resource {logical_id!r}") from None
    if not isinstance(resource, dict):
        raise TemplateError(f"resource {logical_id!r} is not a mapping")
    return resource


def _logical_id_of(value: Any) -> str | None:
    """The logical id a ``Ref``/``GetAtt`` points at, or None for anything else."""
    if isinstance(value, dict) and len(value) == 1:
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
        getatt = value.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt and isinstance(getatt[0], str):
            return getatt[0]
    return None


# --------------------------------------------------------------------------------------------
# Intrinsic functions


class _NoValue:
    """``AWS::NoValue``: a property that resolves to it is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()

_SUB_VAR = re.compile(r"\$\{([^}]*)\}")

PhysicalValue = str | Mapping[str, str]
PhysicalLookup = Mapping[str, PhysicalValue] | Callable[[str, str | None], str]


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Each parameter's value: its ``Default`` unless overridden (like ``--parameter-overrides``).

    Values are strings, as CloudFormation passes them; an override of an unknown parameter is an
    error, as it is for ``sam deploy``.
    """
    declared = template.get("Parameters") or {}
    values: dict[str, str] = {}
    for name, spec in declared.items():
        if isinstance(spec, dict) and "Default" in spec:
            values[name] = _stringify(spec["Default"])
    for name, value in (overrides or {}).items():
        if name not in declared:
            raise TemplateError(f"unknown parameter in overrides: {name}")
        values[name] = _stringify(value)
    missing = sorted(set(declared) - set(values))
    if missing:
        raise TemplateError(f"parameters without Default need a value: {', '.join(missing)}")
    return values


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_stringify(v) for v in value)
    return str(value)


class Resolver:
    """Evaluates intrinsic functions against physical resources and parameter values.

    ``physical`` maps a logical id to what ``Ref`` returns (a string) or to a mapping of
    attribute name -> value, where the key ``"Ref"`` is what ``Ref`` returns and every other key
    is a ``GetAtt`` attribute. It may also be a callable ``(logical_id, attribute_or_None)``.
    Parameters take their defaults from the template unless overridden; pseudo parameters
    (``AWS::Region``...) describe the local account. Supported: Ref, Fn::GetAtt, Fn::Sub,
    Fn::Join, Fn::Select, Fn::Split, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition.
    A Resolver is callable: ``resolver(value)`` returns the evaluated value.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        physical: PhysicalLookup | None = None,
        parameter_overrides: Mapping[str, Any] | None = None,
        *,
        stack_name: str = DEFAULT_STACK_NAME,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
    ) -> None:
        self.template = template
        self.physical: PhysicalLookup = physical if physical is not None else {}
        self.parameters = parameter_values(template, parameter_overrides)
        self.pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": account_id,
            "AWS::Partition": "aws",
            "AWS::StackName": stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/local"
            ),
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": "",
        }
        self._conditions: dict[str, bool] = {}

    def __call__(self, value: Any) -> Any:
        return self.resolve(value)

    # -- lookups

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._physical(name, None)

    def get_att(self, logical_id: str, attribute: str) -> str:
        return self._physical(logical_id, attribute)

    def _physical(self, logical_id: str, attribute: str | None) -> str:
        lookup = self.physical
        if callable(lookup):
            return lookup(logical_id, attribute)
        if logical_id not in lookup:
            what = f"{logical_id}.{attribute}" if attribute else logical_id
            raise TemplateError(f"no physical value for {what}")
        entry = lookup[logical_id]
        if isinstance(entry, str):
            if attribute is None:
                return entry
            raise TemplateError(f"no attribute {attribute} known for {logical_id}")
        key = attribute or "Ref"
        if key not in entry:
            raise TemplateError(f"no attribute {key} known for {logical_id}")
        return entry[key]

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    # -- evaluation

    def resolve(self, value: Any) -> Any:
        """Evaluate every intrinsic function in ``value`` (recursively)."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        result = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in result.items() if v is not NO_VALUE}

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            if isinstance(arg, str):
                arg = arg.split(".", 1)
            logical_id, attribute = self.resolve(arg[0]), self.resolve(arg[1])
            return self.get_att(str(logical_id), str(attribute))
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::Join":
            sep, items = arg
            return str(self.resolve(sep)).join(_stringify(v) for v in self.resolve(items))
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if key == "Fn::Split":
            sep, text = arg
            return str(self.resolve(text)).split(str(self.resolve(sep)))
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self.resolve(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (self.resolve(v) for v in arg)
            return _stringify(left) == _stringify(right)
        if key == "Fn::Not":
            return not bool(self.resolve(arg[0]))
        if key == "Fn::And":
            return all(bool(self.resolve(v)) for v in arg)
        if key == "Fn::Or":
            return any(bool(self.resolve(v)) for v in arg)
        raise TemplateError(f"unsupported intrinsic function {key}")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return _stringify(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return _stringify(self.ref(name))

        return _SUB_VAR.sub(replace, str(text))


# --------------------------------------------------------------------------------------------
# Functions and their triggers


def _function_ids(template: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in _resources(template).items():
        if isinstance(resource, dict) and resource.get("Type") in (
            "AWS::Serverless::Function",
            "AWS::Lambda::Function",
        ):
            yield logical_id, resource.get("Properties") or {}


def _events(template: Mapping[str, Any], event_type: str) -> Iterator[tuple[str, str, dict]]:
    """(function logical id, event name, event properties) for each event of one type."""
    for logical_id, props in _function_ids(template):
        for event_name, event in (props.get("Events") or {}).items():
            if isinstance(event, dict) and event.get("Type") == event_type:
                yield logical_id, event_name, event.get("Properties") or {}


def functions(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each function's ``code_uri``, ``handler``, ``timeout`` and ``memory_size``.

    Globals.Function fills what a function leaves out, as SAM does; Lambda's own defaults
    (3 s, 128 MB) apply when neither sets a value.
    """
    glob = (template.get("Globals") or {}).get("Function") or {}
    result: dict[str, dict[str, Any]] = {}
    for logical_id, props in _function_ids(template):
        code_uri = props.get("CodeUri", glob.get("CodeUri"))
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: CodeUri must be a local path")
        result[logical_id] = {
            "code_uri": code_uri,
            "handler": props.get("Handler", glob.get("Handler", "app.lambda_handler")),
            "timeout": int(props.get("Timeout", glob.get("Timeout", 3))),
            "memory_size": int(props.get("MemorySize", glob.get("MemorySize", 128))),
        }
    return result


class HttpRoute(NamedTuple):
    method: str
    path: str
    logical_id: str


def http_routes(template: Mapping[str, Any]) -> list[HttpRoute]:
    """``(METHOD, path, function logical id)`` for every HttpApi event, in template order.

    A missing Method/Path means ``ANY`` and ``$default``-like catch-all, as SAM defines them.
    """
    routes: list[HttpRoute] = []
    for logical_id, _name, props in _events(template, "HttpApi"):
        method = str(props.get("Method", "ANY")).upper()
        path = str(props.get("Path", "$default"))
        routes.append(HttpRoute(method, path, logical_id))
    return routes


class Schedule(NamedTuple):
    logical_id: str
    event_name: str
    #: The schedule expression as written (may be an intrinsic such as ``{"Ref": ...}``).
    schedule: Any
    enabled: bool
    #: The event's ``Input`` (a JSON string) when set: EventBridge then sends it instead.
    input: str | None


def schedules(template: Mapping[str, Any]) -> list[Schedule]:
    """Every Schedule (and ScheduleV2) event: which function, which expression."""
    found: list[Schedule] = []
    for event_type in ("Schedule", "ScheduleV2"):
        for logical_id, event_name, props in _events(template, event_type):
            expression = props.get("Schedule", props.get("ScheduleExpression"))
            enabled = props.get("Enabled", props.get("State", True))
            if isinstance(enabled, str):
                enabled = enabled.upper() not in ("DISABLED", "FALSE")
            found.append(
                Schedule(logical_id, event_name, expression, bool(enabled), props.get("Input"))
            )
    return found


_RATE = re.compile(r"^\s*rate\(\s*(\d+)\s+(second|minute|hour|day)s?\s*\)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(expression: str) -> float:
    """Seconds between runs of a ``rate(N unit)`` expression.

    ``cron(...)`` is not supported locally (raise, so the caller can say so); the local stack
    offers ``--sweep-interval`` for any schedule instead.
    """
    match = _RATE.match(expression)
    if not match:
        raise TemplateError(f"unsupported schedule expression {expression!r} (only rate(...))")
    amount = int(match.group(1))
    if amount <= 0:
        raise TemplateError(f"schedule rate must be positive: {expression!r}")
    return float(amount * _UNIT_SECONDS[match.group(2).lower()])


class SqsSource(NamedTuple):
    queue_logical_id: str
    function_logical_id: str
    batch_size: int
    report_batch_item_failures: bool


def sqs_sources(template: Mapping[str, Any]) -> list[SqsSource]:
    """Every SQS event source: queue, function, BatchSize and ReportBatchItemFailures.

    The queue must be a ``!GetAtt Queue.Arn`` (or ``!Ref``) of a queue in the template: a queue
    outside the stack cannot exist locally.
    """
    found: list[SqsSource] = []
    for logical_id, event_name, props in _events(template, "SQS"):
        queue = _logical_id_of(props.get("Queue"))
        if queue is None:
            raise TemplateError(f"{logical_id}.{event_name}: Queue must reference a template queue")
        found.append(
            SqsSource(
                queue,
                logical_id,
                int(props.get("BatchSize", 10)),
                "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
            )
        )
    return found


def sqs_max_concurrency(
    template: Mapping[str, Any],
    function_logical_id: str,
    queue_logical_id: str,
    resolve: Callable[[Any], Any] | None = None,
) -> int | None:
    """The event source's ``ScalingConfig.MaximumConcurrency`` (resolved), or None if unset."""
    for logical_id, _name, props in _events(template, "SQS"):
        if logical_id != function_logical_id:
            continue
        if _logical_id_of(props.get("Queue")) != queue_logical_id:
            continue
        value = (props.get("ScalingConfig") or {}).get("MaximumConcurrency")
        if value is None:
            return None
        if resolve is not None:
            value = resolve(value)
        return int(value)
    return None


# --------------------------------------------------------------------------------------------
# Environment


def globals_env(template: Mapping[str, Any], resolve: Callable[[Any], Any]) -> dict[str, str]:
    """Globals.Function.Environment.Variables with every intrinsic evaluated.

    ``resolve`` evaluates a template value; pass a :class:`Resolver`. Values come back as the
    strings Lambda would put in the environment; a variable that resolves to ``AWS::NoValue`` is
    left out.
    """
    glob = (template.get("Globals") or {}).get("Function") or {}
    variables = (glob.get("Environment") or {}).get("Variables") or {}
    env: dict[str, str] = {}
    for name, raw in variables.items():
        value = resolve(raw)
        if value is NO_VALUE:
            continue
        env[name] = _stringify(value)
    return env


# --------------------------------------------------------------------------------------------
# DynamoDB


def _key_schema(items: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in items]


def _projection(projection: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"ProjectionType": projection.get("ProjectionType", "ALL")}
    if projection.get("NonKeyAttributes"):
        result["NonKeyAttributes"] = list(projection["NonKeyAttributes"])
    return result


def _throughput(value: Mapping[str, Any]) -> dict[str, int]:
    return {
        "ReadCapacityUnits": int(value["ReadCapacityUnits"]),
        "WriteCapacityUnits": int(value["WriteCapacityUnits"]),
    }


def table_create_kwargs(
    template: Mapping[str, Any],
    table_name: str | None = None,
    *,
    logical_id: str = TABLE_LOGICAL_ID,
    resolve: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """``dynamodb.create_table`` keyword arguments from the table's template Properties.

    Keys, attributes, billing mode, GSIs/LSIs with their projections, streams and tags. With a
    ``resolve`` (a :class:`Resolver` that knows the KMS key) the SSESpecification is included
    too; without one it is left out, because its key is an intrinsic that only a running stack
    can evaluate. TTL and point-in-time recovery are not create_table arguments: see
    :func:`create_table_from_template`.
    """
    resource = _resource(template, logical_id)
    if resource.get("Type") != "AWS::DynamoDB::Table":
        raise TemplateError(f"{logical_id} is not an AWS::DynamoDB::Table")
    props = resource.get("Properties") or {}
    name = table_name or props.get("TableName")
    if resolve is not None and name is not None:
        name = resolve(name)
    if not name:
        raise TemplateError(f"{logical_id} has no TableName: pass table_name")
    billing = props.get("BillingMode", "PROVISIONED")
    kwargs: dict[str, Any] = {
        "TableName": str(name),
        "AttributeDefinitions": [
            {"AttributeName": a["AttributeName"], "AttributeType": a["AttributeType"]}
            for a in props["AttributeDefinitions"]
        ],
        "KeySchema": _key_schema(props["KeySchema"]),
        "BillingMode": billing,
    }
    if billing == "PROVISIONED":
        kwargs["ProvisionedThroughput"] = _throughput(props["ProvisionedThroughput"])
    gsis = []
    for index in props.get("GlobalSecondaryIndexes") or []:
        gsi: dict[str, Any] = {
            "IndexName": index["IndexName"],
            "KeySchema": _key_schema(index["KeySchema"]),
            "Projection": _projection(index.get("Projection") or {}),
        }
        if billing == "PROVISIONED":
            gsi["ProvisionedThroughput"] = _throughput(index["ProvisionedThroughput"])
        gsis.append(gsi)
    if gsis:
        kwargs["GlobalSecondaryIndexes"] = gsis
    lsis = [
        {
            "IndexName": index["IndexName"],
            "KeySchema": _key_schema(index["KeySchema"]),
            "Projection": _projection(index.get("Projection") or {}),
        }
        for index in props.get("LocalSecondaryIndexes") or []
    ]
    if lsis:
        kwargs["LocalSecondaryIndexes"] = lsis
    stream = props.get("StreamSpecification")
    if stream:
        kwargs["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": stream["StreamViewType"],
        }
    sse = props.get("SSESpecification")
    if sse and resolve is not None:
        sse = resolve(sse)
        spec: dict[str, Any] = {"Enabled": _truthy(sse.get("SSEEnabled", False))}
        if spec["Enabled"]:
            if sse.get("SSEType"):
                spec["SSEType"] = sse["SSEType"]
            if sse.get("KMSMasterKeyId"):
                spec["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
        kwargs["SSESpecification"] = spec
    tags = props.get("Tags")
    if tags and resolve is not None:
        kwargs["Tags"] = [
            {"Key": str(t["Key"]), "Value": _stringify(t["Value"])} for t in resolve(tags)
        ]
    return kwargs


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def create_table_from_template(
    client: Any,
    template: Mapping[str, Any],
    table_name: str | None = None,
    *,
    logical_id: str = TABLE_LOGICAL_ID,
    resolve: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Create the table (as :func:`table_create_kwargs`) and apply TTL and PITR.

    Returns the ``describe_table`` description. Works with moto (which stores TTL but never
    expires items) and with DynamoDB Local / real DynamoDB; the extra settings are separate API
    calls because create_table has no argument for them.
    """
    kwargs = table_create_kwargs(template, table_name, logical_id=logical_id, resolve=resolve)
    props = _resource(template, logical_id).get("Properties") or {}
    client.create_table(**kwargs)
    client.get_waiter("table_exists").wait(
        TableName=kwargs["TableName"], WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    ttl = props.get("TimeToLiveSpecification")
    if ttl and _truthy(ttl.get("Enabled", False)):
        client.update_time_to_live(
            TableName=kwargs["TableName"],
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and _truthy(pitr.get("PointInTimeRecoveryEnabled", False)):
        client.update_continuous_backups(
            TableName=kwargs["TableName"],
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    description: dict[str, Any] = client.describe_table(TableName=kwargs["TableName"])["Table"]
    return description

"""template.yaml's IAM as data: each function's statements, key policies, and a small evaluator.

Why: moto enforces no IAM and no KMS key policy, so the only proof that the deployed functions
may do what their code does is to check the calls the code made (recorded by
``devstack.aws_calls`` while the integration and reliability suites ran) against the template.

What is modelled, and what is not:

* a function's identity statements: ``Policies`` (inline ``Statement`` documents and SAM policy
  templates such as ``DynamoDBCrudPolicy``, expanded from SAM's own policy_templates.json), a
  template role given as ``Role``, and ``AWS::IAM::Policy`` resources attached to its role;
  a managed policy name or ARN cannot be read from the template and is refused;
* KMS key policies of the template's keys: KMS lets a role use a key only when the key policy
  allows it, either naming the role or delegating to IAM through the account principal;
* the implicit KMS use of services: a DynamoDB call on a table, or reading a secret, whose data
  is on a customer managed key needs ``kms:Decrypt`` on that key by the caller, through the
  service (``kms:ViaService``);
* conditions are evaluated for the key policy keys listed in :data:`SUPPORTED_CONDITION_KEYS`;
  anything else raises, so nobody can write a condition this test silently ignores.

Physical names differ per process (the local stack names a table ``qbo-connect-local-...``,
the reliability suite ``reliability-connections``), so each recorded call carries the
environment its process gave the variables template.yaml declares; :class:`Binding` turns that
into the physical values of the resources those variables reference.
"""

from __future__ import annotations

import fnmatch
import glob
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from devstack import aws_calls
from devstack.template import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
    Resolver,
    TemplateError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_ROOT = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:root"
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
#: Key policy condition keys this evaluator understands (others raise UnsupportedPolicy).
SUPPORTED_CONDITION_KEYS = (
    "kms:EncryptionContext:",
    "kms:EncryptionContextKeys",
    "kms:ViaService",
    "kms:CallerAccount",
)
#: DynamoDB actions that read or write table data (the ones that use the table's key).
_DYNAMODB_DATA = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
}


class UnsupportedPolicy(ValueError):
    """Something in template.yaml this checker cannot evaluate (the message says what)."""


# --------------------------------------------------------------------------------------------
# Statements


@dataclass(frozen=True)
class Statement:
    """One policy statement with its intrinsics still unresolved, and where it came from."""

    source: str
    raw: Mapping[str, Any]

    @property
    def effect(self) -> str:
        return str(self.raw.get("Effect", "Allow"))

    def actions(self) -> list[str]:
        return _as_list(self.raw.get("Action"))

    def not_actions(self) -> list[str]:
        return _as_list(self.raw.get("NotAction"))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _resources(template: Mapping[str, Any]) -> dict[str, Any]:
    return dict(template.get("Resources") or {})


def functions(template: Mapping[str, Any]) -> list[str]:
    return [
        lid
        for lid, res in _resources(template).items()
        if isinstance(res, dict) and res.get("Type") in FUNCTION_TYPES
    ]


@cache
def sam_policy_templates() -> dict[str, Any]:
    """SAM's policy templates (``DynamoDBCrudPolicy``...), from the SAM CLI's own package."""
    candidates = sorted(
        glob.glob(
            str(
                REPO_ROOT
                / ".venv-sam/lib/python*/site-packages/samtranslator/policy_templates_data"
                / "policy_templates.json"
            )
        )
    )
    try:
        import samtranslator  # type: ignore[import-not-found]

        candidates.append(
            str(Path(samtranslator.__file__).parent / "policy_templates_data/policy_templates.json")
        )
    except ImportError:
        pass
    for candidate in candidates:
        if Path(candidate).is_file():
            return dict(json.loads(Path(candidate).read_text(encoding="utf-8"))["Templates"])
    raise UnsupportedPolicy(
        "template.yaml uses a SAM policy template, but SAM's policy_templates.json was not "
        "found: run `make install` (it installs the SAM CLI into .venv-sam)"
    )


def expand_policy_template(name: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The statements SAM writes for ``{name: values}`` (its Ref-to-parameter substitution)."""
    templates = sam_policy_templates()
    if name not in templates:
        raise UnsupportedPolicy(f"unknown SAM policy template {name!r}")
    spec = templates[name]
    params = set((spec.get("Parameters") or {}).keys())
    missing = params - set(values or {})
    if missing:
        raise UnsupportedPolicy(f"{name} lacks parameters {sorted(missing)}")

    def substitute(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in params:
                return values[node["Ref"]]
            return {k: substitute(v) for k, v in node.items()}
        if isinstance(node, list):
            return [substitute(v) for v in node]
        return node

    return list(substitute(spec["Definition"])["Statement"])


def _document_statements(document: Any, source: str) -> list[Statement]:
    statements = _as_list((document or {}).get("Statement"))
    return [
        Statement(f"{source}.{s['Sid']}" if s.get("Sid") else f"{source}.Statement[{i}]", s)
        for i, s in enumerate(statements)
    ]


def role_of(template: Mapping[str, Any], function: str) -> str:
    """The logical id of a function's role: its template ``Role`` or SAM's ``<Function>Role``."""
    props = _resources(template)[function].get("Properties") or {}
    role = props.get("Role")
    if role is None:
        return f"{function}Role"
    if isinstance(role, dict):
        target = role.get("Ref") or (role.get("Fn::GetAtt") or [None])[0]
        if isinstance(target, str) and target in _resources(template):
            return target
    raise UnsupportedPolicy(f"{function}: Role must be a role of this template")


def function_statements(template: Mapping[str, Any], function: str) -> list[Statement]:
    """Every identity statement of a function's role (see the module docstring)."""
    resources = _resources(template)
    props = resources[function].get("Properties") or {}
    found: list[Statement] = []
    for index, policy in enumerate(_as_list(props.get("Policies"))):
        source = f"{function}.Policies[{index}]"
        if isinstance(policy, str):
            raise UnsupportedPolicy(
                f"{source}: managed policy {policy!r} cannot be checked; write statements"
            )
        if not isinstance(policy, dict):
            raise UnsupportedPolicy(f"{source}: unsupported policy {policy!r}")
        if "Statement" in policy:
            found += _document_statements(policy, source)
            continue
        if len(policy) != 1:
            raise UnsupportedPolicy(f"{source}: unsupported policy {policy!r}")
        ((name, values),) = policy.items()
        for i, statement in enumerate(expand_policy_template(name, values or {})):
            found.append(Statement(f"{source}.{name}[{i}]", statement))
    role = role_of(template, function)
    role_resource = resources.get(role)
    if role_resource is not None:
        role_props = role_resource.get("Properties") or {}
        if role_props.get("ManagedPolicyArns"):
            raise UnsupportedPolicy(f"{role}: managed policies cannot be checked")
        for i, policy in enumerate(_as_list(role_props.get("Policies"))):
            found += _document_statements(policy.get("PolicyDocument"), f"{role}.Policies[{i}]")
    for lid, resource in resources.items():
        if resource.get("Type") not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        rprops = resource.get("Properties") or {}
        roles = [r.get("Ref") if isinstance(r, dict) else r for r in _as_list(rprops.get("Roles"))]
        if role in roles:
            found += _document_statements(rprops.get("PolicyDocument"), lid)
    return found


def key_ids(template: Mapping[str, Any]) -> list[str]:
    return [lid for lid, r in _resources(template).items() if r.get("Type") == "AWS::KMS::Key"]


def key_policy_statements(template: Mapping[str, Any], key: str) -> list[Statement]:
    props = _resources(template)[key].get("Properties") or {}
    return _document_statements(props.get("KeyPolicy"), f"{key}.KeyPolicy")


# --------------------------------------------------------------------------------------------
# Physical values from a process's environment


def _declared_env(template: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Each env var name -> the raw template values it is given (Globals and per function)."""
    declared: dict[str, list[Any]] = {}
    glob_vars = ((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    for name, raw in (glob_vars.get("Variables") or {}).items():
        declared.setdefault(name, []).append(raw)
    for lid in functions(template):
        props = _resources(template)[lid].get("Properties") or {}
        for name, raw in ((props.get("Environment") or {}).get("Variables") or {}).items():
            declared.setdefault(name, []).append(raw)
    return declared


def _arn(service: str, resource: str, region: str = DEFAULT_REGION) -> str:
    return f"arn:aws:{service}:{region}:{DEFAULT_ACCOUNT_ID}:{resource}"


def _derive(resource_type: str, known: Mapping[str, str]) -> dict[str, str]:
    """All attributes of a resource from the one a process's environment revealed."""
    values = dict(known)
    ref, arn = values.get("Ref"), values.get("Arn")
    if resource_type == "AWS::DynamoDB::Table":
        name = ref or (arn.split(":table/", 1)[1] if arn else None)
        if name:
            values.setdefault("Ref", name)
            values.setdefault("Arn", _arn("dynamodb", f"table/{name}"))
    elif resource_type == "AWS::KMS::Key":
        key_id = ref or (arn.rsplit("/", 1)[1] if arn else None)
        if key_id:
            values.setdefault("Ref", key_id)
            values.setdefault("KeyId", key_id)
            values.setdefault("Arn", _arn("kms", f"key/{key_id}"))
    elif resource_type == "AWS::SecretsManager::Secret":
        secret = ref or values.get("Id") or arn
        if secret:
            values.update({"Ref": secret, "Id": secret, "Arn": secret})
    elif resource_type == "AWS::SQS::Queue":
        if ref and "Arn" not in values:
            values["Arn"] = aws_calls.queue_arn_from_url(ref, DEFAULT_REGION)
        if values.get("Arn"):
            values.setdefault("QueueName", values["Arn"].rsplit(":", 1)[1])
    elif resource_type == "AWS::SNS::Topic":
        if ref:
            values.setdefault("TopicArn", ref)
            values.setdefault("TopicName", ref.rsplit(":", 1)[1])
    elif resource_type in FUNCTION_TYPES:
        name = ref or (arn.split(":function:", 1)[1] if arn else None)
        if name:
            values.setdefault("Ref", name)
            values.setdefault("Arn", _arn("lambda", f"function:{name}"))
    elif resource_type == "AWS::S3::Bucket":
        if ref:
            values.setdefault("Arn", f"arn:aws:s3:::{ref}")
    elif resource_type == "AWS::SSM::Parameter":
        if ref:
            values.setdefault("Arn", _arn("ssm", f"parameter/{ref.lstrip('/')}"))
    elif resource_type == "AWS::Events::EventBus" and ref:
        values.setdefault("Arn", _arn("events", f"event-bus/{ref}"))
    return values


def _placeholder(resource_type: str, logical_id: str) -> dict[str, str] | None:
    if resource_type == "AWS::SQS::Queue":
        return {"Arn": _arn("sqs", logical_id)}
    if resource_type in ("AWS::SecretsManager::Secret", "AWS::SNS::Topic"):
        service = "secretsmanager" if "Secrets" in resource_type else "sns"
        resource = f"secret:{logical_id}" if service == "secretsmanager" else logical_id
        return {"Ref": _arn(service, resource)}
    if resource_type in (
        "AWS::DynamoDB::Table",
        "AWS::KMS::Key",
        "AWS::S3::Bucket",
        "AWS::SSM::Parameter",
        "AWS::Events::EventBus",
        *FUNCTION_TYPES,
    ):
        return {"Ref": logical_id}
    return None


class Binding:
    """One process's view: template intrinsics resolved against the names it ran with."""

    def __init__(self, template: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.template = template
        resources = _resources(template)
        parameters = template.get("Parameters") or {}
        known: dict[str, dict[str, str]] = {}
        overrides: dict[str, str] = {}
        for name, raws in _declared_env(template).items():
            if name not in env:
                continue
            for raw in raws:
                if not isinstance(raw, dict) or len(raw) != 1:
                    continue
                if "Ref" in raw:
                    target, attribute = raw["Ref"], "Ref"
                elif "Fn::GetAtt" in raw:
                    target, attribute = raw["Fn::GetAtt"][0], raw["Fn::GetAtt"][1]
                else:
                    continue
                if target in parameters:
                    overrides[target] = env[name]
                elif target in resources:
                    known.setdefault(target, {})[attribute] = env[name]
        # A resource no variable names gets its logical id as its physical name: statements
        # about it still resolve (and match nothing this process called), and the key of a
        # table or secret is known for the implicit KMS use of a call on it.
        for lid, resource in resources.items():
            if lid not in known and isinstance(resource, dict):
                placeholder = _placeholder(resource.get("Type", ""), lid)
                if placeholder:
                    known[lid] = placeholder
        self.physical = {
            lid: _derive(resources[lid].get("Type", ""), values) for lid, values in known.items()
        }
        self.resolver = Resolver(template, self._lookup, overrides)

    def _lookup(self, logical_id: str, attribute: str | None) -> str:
        resources = _resources(self.template)
        generated_role = logical_id.endswith("Role") and logical_id[: -len("Role")] in resources
        # SAM's generated role, or a template role: named by its logical id (IAM names are not
        # observable locally).
        if generated_role or resources.get(logical_id, {}).get("Type") == "AWS::IAM::Role":
            return (
                logical_id
                if attribute is None
                else f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{logical_id}"
            )
        values = self.physical.get(logical_id)
        key = attribute or "Ref"
        if values is None or key not in values:
            what = f"{logical_id}.{attribute}" if attribute else logical_id
            raise TemplateError(f"{what} is not known in this process (no env var names it)")
        return values[key]

    def resolve(self, value: Any) -> Any:
        """The value with intrinsics evaluated, or raise TemplateError when not knowable here."""
        return self.resolver(value)

    def resolve_list(self, value: Any) -> list[str] | None:
        try:
            resolved = self.resolve(value)
        except TemplateError:
            return None
        return [str(v) for v in _as_list(resolved)]

    def logical_of(self, arn: str) -> str | None:
        """Which template resource an ARN (or an index of a table) belongs to."""
        for lid, values in self.physical.items():
            base = values.get("Arn")
            if base and (arn == base or arn.startswith(base + "/")):
                return lid
        return None

    def role_arn(self, function: str) -> str:
        return str(self._lookup(role_of(self.template, function), "Arn"))


# --------------------------------------------------------------------------------------------
# Evaluation


def _match(pattern: str, value: str) -> bool:
    return (
        fnmatch.fnmatchcase(value.lower(), pattern.lower())
        if "*" in pattern or "?" in pattern
        else pattern.lower() == value.lower()
    )


def _action_matches(statement: Statement, action: str) -> bool:
    if statement.raw.get("NotAction") is not None:
        return not any(_match(p, action) for p in statement.not_actions())
    return any(_match(str(p), action) for p in statement.actions())


def _resource_matches(statement: Statement, binding: Binding, resource: str) -> bool:
    if statement.raw.get("NotResource") is not None:
        excluded = binding.resolve_list(statement.raw["NotResource"])
        return excluded is not None and not any(_match(p, resource) for p in excluded)
    patterns = binding.resolve_list(statement.raw.get("Resource", "*"))
    if patterns is None:
        return False
    return any(_match(p, resource) for p in patterns)


def identity_allows(
    statements: Iterable[Statement], binding: Binding, action: str, resource: str
) -> list[Statement]:
    """The Allow statements that grant ``action`` on ``resource`` (empty if a Deny matches)."""
    allows, denied = [], False
    for statement in statements:
        if not (
            _action_matches(statement, action) and _resource_matches(statement, binding, resource)
        ):
            continue
        if statement.effect == "Deny":
            denied = True
        else:
            allows.append(statement)
    return [] if denied else allows


@dataclass
class KmsRequest:
    """What a KMS key policy is evaluated against."""

    action: str
    principal: str
    encryption_context: Mapping[str, str] = field(default_factory=dict)
    via_service: str | None = None  # "dynamodb", "secretsmanager" for implicit use


def _principals(statement: Statement, binding: Binding) -> list[str] | None:
    principal = statement.raw.get("Principal")
    if principal == "*":
        return ["*"]
    if not isinstance(principal, dict):
        return None
    found: list[str] = []
    for kind, value in principal.items():
        if kind != "AWS":
            continue
        resolved = binding.resolve_list(value)
        if resolved is None:
            return None
        for entry in resolved:
            found.append(ACCOUNT_ROOT if entry == DEFAULT_ACCOUNT_ID else entry)
    return found


def _condition_holds(condition: Mapping[str, Any], request: KmsRequest, binding: Binding) -> bool:
    for operator, tests in condition.items():
        for key, expected in (tests or {}).items():
            expected_values = binding.resolve_list(expected) or []
            if not key.startswith(SUPPORTED_CONDITION_KEYS):
                raise UnsupportedPolicy(f"key policy condition key {key!r} is not evaluated")
            if key == "kms:EncryptionContextKeys":
                present: list[str] | None = sorted(request.encryption_context)
            elif key.startswith("kms:EncryptionContext:"):
                name = key.split(":", 2)[2]
                value = request.encryption_context.get(name)
                present = None if value is None else [value]
            elif key == "kms:ViaService":
                present = (
                    None
                    if request.via_service is None
                    else [f"{request.via_service}.{DEFAULT_REGION}.amazonaws.com"]
                )
            else:  # kms:CallerAccount
                present = [DEFAULT_ACCOUNT_ID]
            if not _operator_holds(operator, present, expected_values):
                return False
    return True


def _operator_holds(operator: str, present: list[str] | None, expected: list[str]) -> bool:
    if operator == "Null":
        wants_null = str(expected[0]).lower() == "true"
        return (present is None) == wants_null
    qualifier, _, base = operator.rpartition(":")
    if base not in ("StringEquals", "StringLike"):
        raise UnsupportedPolicy(f"key policy condition operator {operator!r} is not evaluated")

    def one(value: str) -> bool:
        if base == "StringEquals":
            return value in expected
        return any(fnmatch.fnmatchcase(value, p) for p in expected)

    if qualifier == "ForAllValues":
        return all(one(v) for v in present or [])
    if qualifier == "ForAnyValue":
        return any(one(v) for v in present or [])
    if qualifier:
        raise UnsupportedPolicy(f"key policy condition operator {operator!r} is not evaluated")
    return present is not None and len(present) == 1 and one(present[0])


def key_policy_decision(
    statements: Iterable[Statement], binding: Binding, request: KmsRequest
) -> tuple[str, list[Statement]]:
    """``("direct", ...)`` if the key policy names the role, ``("iam", ...)`` if it delegates
    to the account's IAM, ``("deny", [])`` otherwise (a matching Deny wins)."""
    direct: list[Statement] = []
    delegated: list[Statement] = []
    for statement in statements:
        if not _action_matches(statement, request.action):
            continue
        principals = _principals(statement, binding)
        if principals is None:
            continue
        names_role = request.principal in principals or "*" in principals
        names_account = ACCOUNT_ROOT in principals
        if not (names_role or names_account):
            continue
        condition = statement.raw.get("Condition") or {}
        if condition and not _condition_holds(condition, request, binding):
            continue
        if statement.effect == "Deny":
            return "deny", []
        (direct if names_role else delegated).append(statement)
    if direct:
        return "direct", direct
    if delegated:
        return "iam", delegated
    return "deny", []


# --------------------------------------------------------------------------------------------
# Checking recorded calls


@dataclass(frozen=True)
class Requirement:
    """One permission a recorded call needed (``via`` marks implicit KMS use by a service)."""

    function: str
    action: str
    resource: str
    encryption_context: tuple[tuple[str, str], ...] = ()
    via: str | None = None


@dataclass
class Verdict:
    requirement: Requirement
    allowed: bool
    reason: str
    used: list[Statement] = field(default_factory=list)


def _sse_key(template: Mapping[str, Any], logical_id: str, binding: Binding) -> str | None:
    """The customer managed key ARN a table or secret keeps its data under, if any."""
    resource = _resources(template).get(logical_id) or {}
    props = resource.get("Properties") or {}
    raw: Any = None
    if resource.get("Type") == "AWS::DynamoDB::Table":
        sse = props.get("SSESpecification") or {}
        if str(sse.get("SSEEnabled", False)).lower() == "true" and sse.get("KMSMasterKeyId"):
            raw = sse["KMSMasterKeyId"]
    elif resource.get("Type") == "AWS::SecretsManager::Secret":
        raw = props.get("KmsKeyId")
    if raw is None:
        return None
    value = str(binding.resolve(raw))
    if value.startswith("alias/aws/") or ":alias/aws/" in value:
        return None  # an AWS managed key: its policy allows every authorised caller
    if value.startswith("arn:"):
        return value
    return f"arn:aws:kms:{DEFAULT_REGION}:{DEFAULT_ACCOUNT_ID}:key/{value}"


def requirements_of(
    call: Mapping[str, Any], template: Mapping[str, Any], binding: Binding
) -> list[Requirement]:
    """The permissions one recorded call needs, the implicit KMS use included."""
    function = str(call["function"])
    context = tuple(sorted((call.get("encryption_context") or {}).items()))
    found: list[Requirement] = []
    for action, resource in call["requirements"]:
        found.append(Requirement(function, action, resource, context))
        logical = binding.logical_of(resource)
        if logical is None:
            continue
        implicit: tuple[str, dict[str, str]] | None = None
        if action in _DYNAMODB_DATA:
            implicit = ("dynamodb", {})
        elif action == "secretsmanager:GetSecretValue":
            implicit = ("secretsmanager", {"SecretARN": resource})
        if implicit is None:
            continue
        key = _sse_key(template, logical, binding)
        if key is not None:
            service, ctx = implicit
            found.append(
                Requirement(function, "kms:Decrypt", key, tuple(sorted(ctx.items())), via=service)
            )
    return found


def check(requirement: Requirement, template: Mapping[str, Any], binding: Binding) -> Verdict:
    """Would real AWS allow this? Identity policy, plus the key policy for a template key."""
    statements = function_statements(template, requirement.function)
    identity = identity_allows(statements, binding, requirement.action, requirement.resource)
    key = binding.logical_of(requirement.resource)
    is_template_key = key is not None and key in key_ids(template)
    if not is_template_key:
        if identity:
            return Verdict(requirement, True, "identity policy", identity)
        return Verdict(requirement, False, "no statement of the function's role allows it")
    assert key is not None
    request = KmsRequest(
        requirement.action,
        binding.role_arn(requirement.function),
        dict(requirement.encryption_context),
        requirement.via,
    )
    decision, used = key_policy_decision(key_policy_statements(template, key), binding, request)
    if decision == "direct":
        return Verdict(requirement, True, f"{key}'s key policy names the role", used)
    if decision == "iam" and identity:
        return Verdict(requirement, True, "key policy delegates to IAM", used + identity)
    if decision == "iam":
        return Verdict(requirement, False, f"{key} delegates to IAM but no statement allows it")
    return Verdict(requirement, False, f"{key}'s key policy does not allow the role")


# --------------------------------------------------------------------------------------------
# Grants, for the converse check


@dataclass(frozen=True)
class Grant:
    """One action pattern of one statement that applies to a function."""

    function: str
    action: str
    statement: Statement

    def label(self) -> str:
        return f"{self.function}: {self.action} ({self.statement.source})"


def grants(template: Mapping[str, Any], function: str) -> list[Grant]:
    """The Allow actions a function holds: its identity statements and key policies naming it."""
    found = [
        Grant(function, str(action), statement)
        for statement in function_statements(template, function)
        if statement.effect == "Allow"
        for action in statement.actions()
    ]
    role = role_of(template, function)
    for key in key_ids(template):
        for statement in key_policy_statements(template, key):
            if statement.effect != "Allow":
                continue
            principal = statement.raw.get("Principal") or {}
            values = _as_list(principal.get("AWS")) if isinstance(principal, dict) else []
            names = [
                (v.get("Fn::GetAtt") or [None])[0] if isinstance(v, dict) else None for v in values
            ]
            if role in names:
                found += [Grant(function, str(a), statement) for a in statement.actions()]
    return found


def exercised_by(grant: Grant, verdicts: Iterable[Verdict]) -> bool:
    return any(
        v.allowed
        and v.requirement.function == grant.function
        and any(s is grant.statement or s == grant.statement for s in v.used)
        and _match(grant.action, v.requirement.action)
        for v in verdicts
    )

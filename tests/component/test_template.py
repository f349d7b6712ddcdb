"""devstack.template: template.yaml is read the way CloudFormation/SAM read it.

These tests pin the facts the local stack and the moto-based unit tests rely on, against the
real template.yaml (so a template change that the local stack cannot follow fails here).
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from devstack import template as tpl
from qbo_connect.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict:
    return tpl.load_template(REPO_ROOT / "template.yaml")


def physical(logical_id: str, attribute: str | None) -> str:
    return f"<{logical_id}{'.' + attribute if attribute else ''}>"


# ----------------------------------------------------------------------------- loading


def test_short_form_tags_become_long_form():
    # Given a template fragment with every short form the project uses
    text = """
    AWSTemplateFormatVersion: 2010-09-09
    A: !Ref Thing
    B: !GetAtt Queue.Arn
    C: !GetAtt [Queue, QueueName]
    D: !Sub
      - "${X}-${AWS::Region}"
      - X: !Ref Param
    E: !If [Cond, !Not [!Equals [!Ref P, ""]], !Join [",", [a, b]]]
    F: !GetAtt Db.Endpoint.Address
    """
    # When it is loaded
    data = tpl.loads_template(text)
    # Then the tags are CloudFormation's long form and dates stay strings
    assert data["AWSTemplateFormatVersion"] == "2010-09-09"
    assert data["A"] == {"Ref": "Thing"}
    assert data["B"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert data["C"] == {"Fn::GetAtt": ["Queue", "QueueName"]}
    assert data["D"] == {"Fn::Sub": ["${X}-${AWS::Region}", {"X": {"Ref": "Param"}}]}
    assert data["E"] == {
        "Fn::If": [
            "Cond",
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]},
            {"Fn::Join": [",", ["a", "b"]]},
        ]
    }
    assert data["F"] == {"Fn::GetAtt": ["Db", "Endpoint.Address"]}


def test_loading_has_no_side_effect_on_yaml():
    # Given the module was imported and used
    tpl.loads_template("A: !Ref B")
    # Then PyYAML's own SafeLoader still rejects CloudFormation tags
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("A: !Ref B")


def test_real_template_loads(template):
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert template["Resources"]["RefreshQueue"]["Properties"]["RedrivePolicy"][
        "deadLetterTargetArn"
    ] == {"Fn::GetAtt": ["RefreshDeadLetterQueue", "Arn"]}


# ----------------------------------------------------------------------------- table


def test_table_kwargs_follow_the_template(template):
    # When the create_table arguments are built from ConnectionsTable
    kwargs = tpl.table_create_kwargs(template, "t1")
    props = template["Resources"]["ConnectionsTable"]["Properties"]
    # Then keys, attributes, billing and indexes are the template's own
    assert kwargs["TableName"] == "t1"
    assert kwargs["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in kwargs
    assert kwargs["KeySchema"] == props["KeySchema"]
    assert kwargs["AttributeDefinitions"] == props["AttributeDefinitions"]
    indexes = {i["IndexName"]: i for i in kwargs["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"TenantIndex", "DueIndex"}
    assert indexes["DueIndex"]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    tenant = indexes["TenantIndex"]
    assert tenant["Projection"]["ProjectionType"] == "INCLUDE"
    assert "status" in tenant["Projection"]["NonKeyAttributes"]
    assert tenant["KeySchema"] == [
        {"AttributeName": "tenant_id", "KeyType": "HASH"},
        {"AttributeName": "realm_id", "KeyType": "RANGE"},
    ]
    # And SSE (whose key is an intrinsic) only appears when a resolver can evaluate it
    assert "SSESpecification" not in kwargs
    resolver = tpl.Resolver(template, physical)
    with_sse = tpl.table_create_kwargs(template, "t1", resolve=resolver)
    # (the table is on the AWS managed key: no KMSMasterKeyId, so no key policy to maintain)
    assert with_sse["SSESpecification"] == {"Enabled": True, "SSEType": "KMS"}


def test_table_kwargs_need_a_name(template):
    with pytest.raises(tpl.TemplateError):
        tpl.table_create_kwargs(template)
    with pytest.raises(tpl.TemplateError):
        tpl.table_create_kwargs(template, "x", logical_id="RefreshQueue")


def test_create_table_from_template_in_moto(template):
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        # When the table is created from the template
        description = tpl.create_table_from_template(client, template, "connections")
        # Then it exists with its indexes, TTL and point-in-time recovery
        assert description["TableStatus"] == "ACTIVE"
        assert {i["IndexName"] for i in description["GlobalSecondaryIndexes"]} == {
            "TenantIndex",
            "DueIndex",
        }
        ttl = client.describe_time_to_live(TableName="connections")["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
        backups = client.describe_continuous_backups(TableName="connections")
        pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
        assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"


# ----------------------------------------------------------------------------- functions


def test_http_routes(template):
    assert tpl.http_routes(template) == [
        ("GET", "/connect", "ConnectFunction"),
        ("GET", "/reconnect", "ConnectFunction"),
        ("GET", "/disconnected", "ConnectFunction"),
        ("GET", "/callback", "CallbackFunction"),
        ("POST", "/webhooks", "WebhookFunction"),
    ]


def test_functions_merge_globals(template):
    fns = tpl.functions(template)
    assert set(fns) == {
        "ConnectFunction",
        "CallbackFunction",
        "GetTokenFunction",
        "QuickBooksApiFunction",
        "ConnectionsFunction",
        "RefreshSweepFunction",
        "RefreshWorkerFunction",
        "WebhookFunction",
        "WebhookProcessorFunction",
    }
    assert fns["CallbackFunction"]["timeout"] == 30  # from Globals
    assert fns["GetTokenFunction"]["timeout"] == 90  # its own
    assert fns["GetTokenFunction"]["memory_size"] == 512  # from Globals
    assert fns["RefreshWorkerFunction"]["memory_size"] == 256  # its own
    for spec in fns.values():
        assert spec["handler"] == "app.lambda_handler"
        assert (REPO_ROOT / spec["code_uri"] / "app.py").is_file()


def test_schedules_and_rates(template):
    (schedule,) = tpl.schedules(template)
    assert schedule.logical_id == "RefreshSweepFunction"
    assert schedule.schedule == {"Ref": "SweepSchedule"}
    assert schedule.enabled
    assert tpl.parse_rate(tpl.Resolver(template)(schedule.schedule)) == 300
    assert tpl.parse_rate("rate(1 minute)") == 60
    assert tpl.parse_rate("rate(2 hours)") == 7200
    assert tpl.parse_rate("rate(30 seconds)") == 30
    for bad in ("cron(0 12 * * ? *)", "rate(0 minutes)", "rate(five minutes)"):
        with pytest.raises(tpl.TemplateError):
            tpl.parse_rate(bad)


def test_sqs_sources(template):
    assert tpl.sqs_sources(template) == [
        ("RefreshQueue", "RefreshWorkerFunction", 10, True),
        ("WebhookQueue", "WebhookProcessorFunction", 10, True),
    ]
    default = tpl.Resolver(template)
    overridden = tpl.Resolver(template, parameter_overrides={"WorkerMaxConcurrency": "7"})
    args = (template, "RefreshWorkerFunction", "RefreshQueue")
    assert tpl.sqs_max_concurrency(*args, default) == 5
    assert tpl.sqs_max_concurrency(*args, overridden) == 7
    assert tpl.sqs_max_concurrency(template, "GetTokenFunction", "RefreshQueue", default) is None


# ----------------------------------------------------------------------------- environment


def test_globals_env_resolves_refs_and_parameters(template):
    # Given physical values for the resources the environment references
    resources = {
        "ConnectionsTable": "table-1",
        "TokenKey": {"Ref": "key-1", "Arn": "arn:key-1"},
        "IntuitClientSecret": "arn:secret-1",
        "ReturnSigningSecret": "arn:secret-2",
        "RefreshQueue": {"Ref": "http://queue", "Arn": "arn:queue"},
        "WebhookVerifierSecret": "arn:webhook-secret",
        "WebhookQueue": {"Ref": "http://webhook-queue", "Arn": "arn:webhook-queue"},
        "WebhookDeadLetterQueue": {"Ref": "http://webhook-dlq", "Arn": "arn:webhook-dlq"},
    }
    # When the Globals environment is resolved with default parameters
    env = tpl.globals_env(template, tpl.Resolver(template, resources))
    # Then every variable is a string with the physical value or parameter default
    assert all(isinstance(v, str) for v in env.values())
    assert env["TABLE_NAME"] == "table-1"
    assert env["TOKEN_KEY_ID"] == "arn:key-1"
    assert env["INTUIT_CLIENT_SECRET_ID"] == "arn:secret-1"
    assert env["RETURN_SIGNING_SECRET_ID"] == "arn:secret-2"
    assert env["REFRESH_QUEUE_URL"] == "http://queue"
    assert env["WEBHOOK_VERIFIER_SECRET_ID"] == "arn:webhook-secret"
    assert env["WEBHOOK_QUEUE_URL"] == "http://webhook-queue"
    assert env["WEBHOOK_DEAD_LETTER_QUEUE_URL"] == "http://webhook-dlq"
    assert env["WEBHOOK_VERIFIER_OVERLAP_MINUTES"] == "60"
    assert env["INTUIT_ENVIRONMENT"] == "sandbox"
    assert env["QUICKBOOKS_API_BASE_URL"] == "https://sandbox-quickbooks.api.intuit.com"
    assert env["KEEP_ALIVE_HOURS"] == "48" == str(Settings.keep_alive_hours)
    assert env["PUBLIC_BASE_URL"] == ""
    assert env["EMIT_REFRESHED_EVENTS"] == "false"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "QboConnect"


def test_globals_env_with_overrides(template):
    resolver = tpl.Resolver(
        template,
        physical,
        {"IntuitEnvironment": "production", "PublicBaseUrl": "https://c.example.com"},
    )
    env = tpl.globals_env(template, resolver)
    assert env["INTUIT_ENVIRONMENT"] == "production"
    assert env["QUICKBOOKS_API_BASE_URL"] == "https://quickbooks.api.intuit.com"
    assert env["PUBLIC_BASE_URL"] == "https://c.example.com"
    assert resolver.condition("HasPublicBaseUrl") is True
    assert resolver.condition("HasAlarmEmail") is False


def test_unknown_parameter_override_is_refused(template):
    with pytest.raises(tpl.TemplateError, match="Nope"):
        tpl.Resolver(template, parameter_overrides={"Nope": "1"})


def test_resolver_sub_forms(template):
    resolver = tpl.Resolver(template, physical, stack_name="s1")
    assert resolver({"Fn::Sub": "${ConnectionsTable.Arn}/index/DueIndex"}) == (
        "<ConnectionsTable.Arn>/index/DueIndex"
    )
    assert resolver({"Fn::Sub": "alias/${AWS::StackName}-tokens"}) == "alias/s1-tokens"
    assert resolver({"Fn::Sub": "${!Literal}-${EventBusName}"}) == "${Literal}-default"
    assert resolver({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}) == "b"
    assert resolver([{"Ref": "AWS::NoValue"}, "x"]) == ["x"]
    with pytest.raises(tpl.TemplateError):
        resolver({"Fn::If": ["NoSuchCondition", 1, 2]})
    with pytest.raises(tpl.TemplateError):
        tpl.Resolver(template, {})({"Ref": "ConnectionsTable"})


def test_libyaml_and_the_python_parser_read_the_template_alike() -> None:
    """The local stack reads template.yaml with libyaml when it can; both parsers agree on it."""
    if yaml.__with_libyaml__:
        assert issubclass(tpl._CfnLoader, yaml.CSafeLoader)
    text = (REPO_ROOT / "template.yaml").read_text(encoding="utf-8")

    class PythonCfnLoader(yaml.SafeLoader):
        pass

    PythonCfnLoader.yaml_implicit_resolvers = tpl._CfnLoader.yaml_implicit_resolvers
    PythonCfnLoader.yaml_multi_constructors = tpl._CfnLoader.yaml_multi_constructors
    by_python = yaml.load(text, Loader=PythonCfnLoader)
    assert by_python == tpl.loads_template(text)
    assert by_python["AWSTemplateFormatVersion"] == "2010-09-09"

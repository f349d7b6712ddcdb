"""The IAM checker itself (tests/iam/policy.py), on small templates and on template.yaml.

These pin down that the checker refuses what real AWS refuses: a missing statement, a key
policy that does not name the role, a missing encryption context, the implicit KMS use of a
table on a customer managed key, a Deny. Fast: no recorded calls, no servers.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from devstack.template import loads_template
from tests.iam import policy

REPO_ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t1"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/k-1"

SMALL = """
Globals:
  Function:
    Environment:
      Variables:
        TABLE_NAME: !Ref Table
        KEY_ID: !GetAtt Key.Arn
Resources:
  Key:
    Type: AWS::KMS::Key
    Properties:
      KeyPolicy:
        Statement:
          - Effect: Allow
            Principal: {AWS: !Sub "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
            Action: kms:DescribeKey
            Resource: "*"
          - Effect: Allow
            Principal: {AWS: [!GetAtt ReaderRole.Arn]}
            Action: kms:Decrypt
            Resource: "*"
            Condition:
              StringEquals: {"kms:EncryptionContext:purpose": tokens}
              "Null": {"kms:EncryptionContext:realm_id": "false"}
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      SSESpecification: {SSEEnabled: true, SSEType: KMS, KMSMasterKeyId: !Ref Key}
  Reader:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - Statement:
            - Effect: Allow
              Action: [dynamodb:GetItem]
              Resource: !GetAtt Table.Arn
  Writer:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref Table}
        - Statement:
            - Effect: Deny
              Action: dynamodb:DeleteItem
              Resource: "*"
"""
ENV = {"TABLE_NAME": "t1", "KEY_ID": KEY_ARN}


def verdicts(template: dict[str, Any], call: dict[str, Any]) -> list[policy.Verdict]:
    binding = policy.Binding(template, ENV)
    return [
        policy.check(r, template, binding) for r in policy.requirements_of(call, template, binding)
    ]


def call(function: str, action: str, resource: str, **context: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"function": function, "requirements": [[action, resource]]}
    if context:
        entry["encryption_context"] = context
    return entry


def test_a_table_on_a_customer_managed_key_needs_kms_decrypt_through_dynamodb() -> None:
    # Given a table on a customer managed key whose policy names only the reader's role
    template = loads_template(SMALL)
    # When the reader reads an item, and the writer (no key grant) puts one
    read = verdicts(template, call("Reader", "dynamodb:GetItem", ARN))
    write = verdicts(template, call("Writer", "dynamodb:PutItem", ARN))
    # Then both need kms:Decrypt on the key through DynamoDB; the key policy's condition asks
    # for an encryption context DynamoDB does not send, so even the named role is refused
    assert [(v.requirement.action, v.requirement.via) for v in read] == [
        ("dynamodb:GetItem", None),
        ("kms:Decrypt", "dynamodb"),
    ]
    assert read[0].allowed and not read[1].allowed
    assert write[0].allowed and not write[1].allowed
    assert "does not allow the role" in write[1].reason


def test_the_key_policy_must_name_the_role_and_see_the_encryption_context() -> None:
    template = loads_template(SMALL)
    # Given a Decrypt with the full context by the named role
    ok = verdicts(template, call("Reader", "kms:Decrypt", KEY_ARN, purpose="tokens", realm_id="1"))
    # And one without realm_id, and one by a role the policy does not name
    no_realm = verdicts(template, call("Reader", "kms:Decrypt", KEY_ARN, purpose="tokens"))
    other = verdicts(
        template, call("Writer", "kms:Decrypt", KEY_ARN, purpose="tokens", realm_id="1")
    )
    # Then only the first is allowed (the key policy alone grants it: no IAM statement needed)
    assert ok[0].allowed and "names the role" in ok[0].reason
    assert not no_realm[0].allowed
    assert not other[0].allowed


def test_sam_policy_templates_are_expanded_and_a_deny_wins() -> None:
    template = loads_template(SMALL)
    binding = policy.Binding(template, ENV)
    statements = policy.function_statements(template, "Writer")
    # DynamoDBCrudPolicy covers the table and its indexes
    assert policy.identity_allows(statements, binding, "dynamodb:Query", ARN + "/index/ByTenant")
    assert policy.identity_allows(statements, binding, "dynamodb:UpdateItem", ARN)
    # ... but not another table, and the explicit Deny wins over the template's Allow
    assert not policy.identity_allows(
        statements, binding, "dynamodb:GetItem", ARN.replace("t1", "t2")
    )
    assert not policy.identity_allows(statements, binding, "dynamodb:DeleteItem", ARN)


def test_unknown_condition_keys_and_managed_policies_are_refused_not_ignored() -> None:
    template = loads_template(SMALL)
    key = template["Resources"]["Key"]["Properties"]["KeyPolicy"]["Statement"][1]
    key["Condition"] = {"StringEquals": {"aws:SourceIp": "10.0.0.1"}}
    with pytest.raises(policy.UnsupportedPolicy):
        verdicts(template, call("Reader", "kms:Decrypt", KEY_ARN, purpose="tokens"))
    template["Resources"]["Reader"]["Properties"]["Policies"].append("AmazonDynamoDBFullAccess")
    with pytest.raises(policy.UnsupportedPolicy):
        policy.function_statements(template, "Reader")


def test_removing_a_statement_from_template_yaml_refuses_the_call_it_granted(template) -> None:
    # Given the calls the connect function makes on the table, as the local stack records them
    env = {"TABLE_NAME": "qbo-connect-local-ConnectionsTable"}
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/qbo-connect-local-ConnectionsTable"
    made = call("ConnectFunction", "dynamodb:PutItem", table)
    binding = policy.Binding(template, env)
    before = [
        policy.check(r, template, binding) for r in policy.requirements_of(made, template, binding)
    ]
    # When the statement granting it is removed from a copy of template.yaml
    stripped = copy.deepcopy(template)
    statements = stripped["Resources"]["ConnectFunction"]["Properties"]["Policies"][0]["Statement"]
    statements[:] = [s for s in statements if "dynamodb:PutItem" not in str(s.get("Action"))]
    binding = policy.Binding(stripped, env)
    after = [
        policy.check(r, stripped, binding) for r in policy.requirements_of(made, stripped, binding)
    ]
    # Then the same call is allowed before and refused after
    assert all(v.allowed for v in before)
    assert not any(v.allowed for v in after)


def test_every_function_of_template_yaml_can_be_evaluated(template) -> None:
    # Every function's statements and grants are readable (no managed policy, no unknown
    # policy template), so the session check cannot crash on a newly added function.
    for function in policy.functions(template):
        policy.function_statements(template, function)
        assert policy.grants(template, function), f"{function} holds no grant at all"

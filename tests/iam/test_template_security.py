"""Security properties of template.yaml that no local run can show (moto enforces no IAM/KMS).

Each test names a mitigation of docs/SECURITY.md: who may use the token key, who may read the
client secret, what the access logs hold, how the public functions are bounded, and that every
scanner skip carries its reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.iam import policy

ENV: dict[str, str] = {}
TOKEN_CONTEXT = {"purpose": "qbo-connect-tokens", "realm_id": "9130357766042906"}
#: The only roles that may seal (new data key) or open (unwrap) tokens.
SEALERS = {"CallbackFunction", "ConnectionsFunction"}
OPENERS = {
    "GetTokenFunction",
    "QuickBooksApiFunction",  # the proxy opens the access token it calls QuickBooks with
    "ConnectionsFunction",
    "RefreshWorkerFunction",  # also probes a Disconnect URL hint with the stored access token
}
PUBLIC_FUNCTIONS = ("ConnectFunction", "CallbackFunction", "WebhookFunction")


def _decision(template: dict[str, Any], principal: str, action: str, **extra: Any) -> str:
    binding = policy.Binding(template, ENV)
    request = policy.KmsRequest(action, principal, extra.get("context", TOKEN_CONTEXT))
    statements = policy.key_policy_statements(template, "TokenKey")
    decision, _ = policy.key_policy_decision(statements, binding, request)
    return decision


def test_token_key_is_used_only_by_the_roles_that_seal_or_open_tokens(template) -> None:
    binding = policy.Binding(template, ENV)
    # Given every function's role, and the account itself (any IAM principal with kms:*)
    for function in policy.functions(template):
        role = binding.role_arn(function)
        # Then only the sealing roles may create data keys, only the opening roles unwrap them
        expected_seal = "direct" if function in SEALERS else "deny"
        expected_open = "direct" if function in OPENERS else "deny"
        assert _decision(template, role, "kms:GenerateDataKey") == expected_seal, function
        assert _decision(template, role, "kms:Decrypt") == expected_open, function
    # And the account administers the key but cannot use it, nor grant itself the use
    for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:CreateGrant"):
        assert _decision(template, policy.ACCOUNT_ROOT, action) == "deny", action
    assert _decision(template, policy.ACCOUNT_ROOT, "kms:ScheduleKeyDeletion") != "deny"


def test_token_key_requires_the_encryption_context(template) -> None:
    role = policy.Binding(template, ENV).role_arn("GetTokenFunction")
    # A Decrypt without the realm, or for another purpose, is refused even for a token role
    assert _decision(template, role, "kms:Decrypt", context={"purpose": "qbo-connect-tokens"}) == (
        "deny"
    )
    other = {"purpose": "something-else", "realm_id": "1"}
    assert _decision(template, role, "kms:Decrypt", context=other) == "deny"
    assert _decision(template, role, "kms:Decrypt") == "direct"


def test_table_is_not_on_the_token_key(template) -> None:
    sse = template["Resources"]["ConnectionsTable"]["Properties"]["SSESpecification"]
    # One key per purpose: the table on the AWS managed key, tokens sealed under TokenKey
    assert "KMSMasterKeyId" not in sse


def test_client_secret_is_on_its_own_key_used_only_through_secrets_manager(template) -> None:
    secret = template["Resources"]["IntuitClientSecret"]["Properties"]
    assert secret["KmsKeyId"] == {"Ref": "ClientSecretKey"}
    binding = policy.Binding(template, ENV)
    statements = policy.key_policy_statements(template, "ClientSecretKey")
    role = binding.role_arn("GetTokenFunction")
    direct = policy.KmsRequest("kms:Decrypt", role, {}, None)
    via = policy.KmsRequest("kms:Decrypt", role, {}, "secretsmanager")
    # Decrypting the key directly is refused; through Secrets Manager it is up to IAM
    assert policy.key_policy_decision(statements, binding, direct)[0] == "deny"
    assert policy.key_policy_decision(statements, binding, via)[0] == "iam"


def test_only_the_functions_that_call_intuit_read_the_client_secret(template) -> None:
    binding = policy.Binding(template, ENV)
    secret = str(binding.resolve({"Ref": "IntuitClientSecret"}))
    readers = {
        function
        for function in policy.functions(template)
        if policy.identity_allows(
            policy.function_statements(template, function),
            binding,
            "secretsmanager:GetSecretValue",
            secret,
        )
    }
    # The sweep only enqueues: it never talks to Intuit, so it never holds the secret
    assert "RefreshSweepFunction" not in readers
    assert readers <= {
        "ConnectFunction",
        "CallbackFunction",
        "GetTokenFunction",
        "QuickBooksApiFunction",  # a 401 forces a refresh under the lease
        "ConnectionsFunction",
        "RefreshWorkerFunction",
    }


def test_http_api_access_logs_hold_no_query_string_header_or_cookie(template) -> None:
    api = template["Resources"]["ConnectApi"]["Properties"]
    settings = api["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["ConnectApiAccessLogGroup", "Arn"]}
    variables = set(re.findall(r"\$context\.[A-Za-z.]+", settings["Format"]))
    # Link tokens, OAuth codes and states travel in query strings; cookies hold the state nonce
    allowed = {
        "$context.requestId",
        "$context.requestTime",
        "$context.identity.sourceIp",
        "$context.httpMethod",
        "$context.path",
        "$context.routeKey",
        "$context.status",
        "$context.protocol",
        "$context.responseLength",
        "$context.responseLatency",
        "$context.integrationErrorMessage",
        "$context.identity.userAgent",
    }
    assert variables, "the access log format logs nothing"
    assert variables <= allowed, f"access log fields not reviewed: {sorted(variables - allowed)}"


def test_public_functions_have_reserved_concurrency_parameters(template) -> None:
    parameters = template["Parameters"]
    for function in PUBLIC_FUNCTIONS:
        props = template["Resources"][function]["Properties"]
        reserved = props["ReservedConcurrentExecutions"]
        # !If [HasXReservedConcurrency, !Ref XReservedConcurrency, !Ref AWS::NoValue]
        condition, value, otherwise = reserved["Fn::If"]
        assert value["Ref"] in parameters and otherwise == {"Ref": "AWS::NoValue"}
        assert condition in template["Conditions"]
    # And the API throttles every route before a function is invoked
    routes = template["Resources"]["ConnectApi"]["Properties"]["DefaultRouteSettings"]
    assert routes["ThrottlingRateLimit"] > 0 and routes["ThrottlingBurstLimit"] > 0


def test_every_public_route_has_its_own_throttle_and_the_disconnect_url_the_lowest(
    template,
) -> None:
    # Given every HttpApi route the functions declare
    declared = {
        f"{event['Properties']['Method']} {event['Properties']['Path']}"
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
        for event in (resource["Properties"].get("Events") or {}).values()
        if event["Type"] == "HttpApi"
    }
    settings = template["Resources"]["ConnectApi"]["Properties"]["RouteSettings"]
    # Then each has limits of its own (none depends on how a stage default is shared) ...
    assert set(settings) == declared
    for limits in settings.values():
        assert limits["ThrottlingRateLimit"] > 0 and limits["ThrottlingBurstLimit"] > 0
    # ... and the unauthenticated Disconnect URL cannot crowd out connecting or webhooks
    hint = settings["GET /disconnected"]["ThrottlingRateLimit"]
    assert all(
        hint < limits["ThrottlingRateLimit"]
        for key, limits in settings.items()
        if key != "GET /disconnected"
    )


def test_every_scanner_skip_is_written_next_to_its_resource_with_a_reason(template) -> None:
    skips = 0
    for logical_id, resource in template["Resources"].items():
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []:
            skips += 1
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (logical_id, skip)
            assert len(skip.get("comment", "").split()) >= 8, f"{logical_id}: {skip['id']}"
    assert skips, "no checkov skip found: the check reads the wrong place"


def test_security_doc_names_only_tests_that_exist() -> None:
    # docs/SECURITY.md proves each mitigation with a test: a renamed or deleted test must not
    # leave a claim behind that nothing proves any more.
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "SECURITY.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", text)
    assert len(named) >= 20
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(rf"^\s*def {name}\(", (root / path).read_text(encoding="utf-8"), re.M)
    ]
    assert not missing, f"docs/SECURITY.md names tests that do not exist: {missing}"


def _requirement_lines(text: str) -> list[str]:
    """Logical lines of a requirements file as pip reads them (continuations joined, comments
    and blank lines dropped)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        " ".join(line.split(" #", 1)[0].split())
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_layer_installs_exactly_pinned_and_hashed_packages() -> None:
    # Given the layer's lock file and its direct dependencies
    layer = Path(__file__).resolve().parents[2] / "layers" / "core"
    pinned: dict[str, str] = {}
    for line in _requirement_lines((layer / "requirements.txt").read_text(encoding="utf-8")):
        # Then every package, transitive ones too, is one exact version with its files' hashes
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"not pinned with hashes: {line[:80]}"
        pinned[match[1].lower().replace("_", "-")] = match[2]
    for line in _requirement_lines((layer / "requirements.in").read_text(encoding="utf-8")):
        name, _, version = line.partition("==")
        name = re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-")
        # and the lock holds each direct dependency at the version asked for
        assert pinned.get(name) == version.strip(), name
    assert {"urllib3", "cffi", "certifi"} <= set(pinned)

"""Settings come from env vars once, with Intuit's real endpoints as defaults."""

import pytest

from qbo_connect.config import load_settings
from qbo_connect.errors import ConfigurationError


def test_defaults_are_intuits_real_endpoints():
    settings = load_settings({"TABLE_NAME": "t"})
    assert settings.intuit.token == "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
    assert settings.intuit.api_base_url == "https://sandbox-quickbooks.api.intuit.com"
    production = load_settings({"INTUIT_ENVIRONMENT": "production"})
    assert production.intuit.userinfo.startswith("https://accounts.platform.intuit.com")


def test_every_endpoint_is_overridable():
    settings = load_settings({"INTUIT_TOKEN_ENDPOINT": "http://127.0.0.1:1/token/"})
    assert settings.intuit.token == "http://127.0.0.1:1/token"


def test_lease_outlives_the_whole_intuit_budget():
    settings = load_settings({"INTUIT_TIMEOUT_SECONDS": "10", "INTUIT_MAX_ATTEMPTS": "3"})
    assert settings.lease_duration > 3 * 10 + 2 * settings.intuit_backoff_max_seconds


@pytest.mark.parametrize(
    "env",
    [
        {"INTUIT_ENVIRONMENT": "staging"},
        {"CONNECT_MODE": "sometimes"},
        {"SCOPES": "openid made.up.scope"},
        {"KEEP_ALIVE_HOURS": "soon"},
    ],
)
def test_bad_configuration_names_the_variable(env):
    with pytest.raises(ConfigurationError) as info:
        load_settings(env)
    assert next(iter(env)).split("_")[0] in str(info.value)


def test_invalid_grant_window_comes_in_minutes_from_the_template():
    assert (
        load_settings({"INVALID_GRANT_WINDOW_MINUTES": "360"}).invalid_grant_window_seconds == 21600
    )
    assert load_settings({"INVALID_GRANT_WINDOW_SECONDS": "5"}).invalid_grant_window_seconds == 5


def test_the_worst_case_under_the_lease_counts_intuit_and_aws_budgets():
    settings = load_settings({})
    # Intuit: 3 attempts x 10 s + 2 backoffs of up to 8 s; AWS: 3 calls of 3 attempts x
    # (1 s connect + 3 s read) plus botocore's backoffs (1 s, 2 s)
    assert settings.intuit_call_worst_seconds == 46
    assert settings.aws_call_worst_seconds == 15
    assert settings.worst_case_under_lease == 46 + 3 * 15
    assert settings.lease_duration > settings.worst_case_under_lease


def test_a_lease_shorter_than_the_worst_case_is_refused_at_cold_start():
    # Given a lease that a slow Intuit plus slow AWS calls could outlast
    with pytest.raises(ConfigurationError) as info:
        load_settings({"REFRESH_LEASE_SECONDS": "60"})
    # Then the error says which setting and by how much
    assert "REFRESH_LEASE_SECONDS=60" in info.value.message
    assert "91.0 s" in info.value.message
    # A lease that covers the budget is fine, and so is a shorter budget with a shorter lease
    assert load_settings({"REFRESH_LEASE_SECONDS": "91"}).lease_duration == 91
    short = {
        "INTUIT_TIMEOUT_SECONDS": "1",
        "INTUIT_MAX_ATTEMPTS": "1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONNECT_TIMEOUT_SECONDS": "0.5",
        "AWS_READ_TIMEOUT_SECONDS": "1",
        "REFRESH_LEASE_SECONDS": "6",
    }
    assert load_settings(short).worst_case_under_lease == 5.5


def test_the_worker_defers_with_the_same_figure():
    from qbo_connect.sweep.worker import worst_case_refresh_ms

    settings = load_settings({})
    assert worst_case_refresh_ms(settings) == int(
        (settings.worst_case_under_lease + 2 * settings.aws_call_worst_seconds) * 1000
    )


def test_every_setting_is_declared_once_and_every_template_variable_is_declared(template):
    from qbo_connect.api.settings import PROXY_SETTINGS
    from qbo_connect.changes.settings import CHANGE_FEED_SETTINGS
    from qbo_connect.config import SETTINGS, WEBHOOK_SETTINGS

    # One declaration per variable across the vault's, the proxy's and the change feed's
    # tables (the webhook family's own table repeats the few it shares, on purpose: its cold
    # path never loads the others).
    service = [s.env for table in (SETTINGS, PROXY_SETTINGS, CHANGE_FEED_SETTINGS) for s in table]
    assert len(service) == len(set(service))
    declared = set(service) | {s.env for s in WEBHOOK_SETTINGS}
    read_elsewhere = {
        "INTUIT_ENVIRONMENT",
        "QUICKBOOKS_API_BASE_URL",
        "SCOPES",
        "ALLOWED_EXTRA_SCOPES",
        "INVALID_GRANT_WINDOW_MINUTES",
        "INVALID_GRANT_BREAKER_WINDOW_MINUTES",
        "WEBHOOK_VERIFIER_OVERLAP_MINUTES",
    }
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    ours = {k for k in variables if not k.startswith(("POWERTOOLS_", "AWS_"))}
    assert ours - declared - read_elsewhere == set()


def test_a_function_names_every_missing_variable_it_needs():
    from qbo_connect.config import FUNCTIONS, check_for, missing_for

    assert missing_for("GetTokenFunction", {"TABLE_NAME": "t"}) == [
        "TOKEN_KEY_ID",
        "INTUIT_CLIENT_SECRET_ID",
    ]
    assert missing_for("RefreshSweepFunction", {}) == ["TABLE_NAME", "REFRESH_QUEUE_URL"]
    assert missing_for("WebhookFunction", {}) == ["WEBHOOK_VERIFIER_SECRET_ID", "WEBHOOK_QUEUE_URL"]
    with pytest.raises(ConfigurationError, match="TOKEN_KEY_ID, INTUIT_CLIENT_SECRET_ID"):
        check_for("GetTokenFunction", {"TABLE_NAME": "t"})
    everything = {"TABLE_NAME": "t", "TOKEN_KEY_ID": "k", "INTUIT_CLIENT_SECRET_ID": "s"}
    everything |= {"REFRESH_QUEUE_URL": "q", "WEBHOOK_VERIFIER_SECRET_ID": "v"}
    everything |= {"WEBHOOK_QUEUE_URL": "w"}
    for function in FUNCTIONS:
        check_for(function, everything)


def test_minutes_from_the_template_become_seconds_and_seconds_win():
    from qbo_connect.webhooks.settings import load_webhook_settings

    assert load_settings({"INVALID_GRANT_WINDOW_MINUTES": "5"}).invalid_grant_window_seconds == 300
    both = {"INVALID_GRANT_WINDOW_MINUTES": "5", "INVALID_GRANT_WINDOW_SECONDS": "7"}
    assert load_settings(both).invalid_grant_window_seconds == 7
    hooks = load_webhook_settings({"WEBHOOK_VERIFIER_OVERLAP_MINUTES": "2"})
    assert hooks.overlap_seconds == 120.0
    with pytest.raises(ConfigurationError, match="WEBHOOK_CLAIM_SECONDS must not be negative"):
        load_webhook_settings({"WEBHOOK_CLAIM_SECONDS": "-1"})


def test_the_change_feed_settings_refuse_a_bad_entity_list_and_a_negative_period():
    from qbo_connect.changes.settings import DEFAULT_ENTITIES, load_change_feed_settings
    from qbo_connect.errors import ConfigurationError

    default = load_change_feed_settings({})
    assert (default.every_hours, default.entities) == (6.0, DEFAULT_ENTITIES)
    assert default.period_seconds == 6 * 3600
    chosen = load_change_feed_settings({"RECONCILE_ENTITIES": "Invoice, Bill,Invoice"})
    assert chosen.entities == ("Invoice", "Bill")
    assert load_change_feed_settings({"RECONCILE_EVERY_HOURS": "0"}).period_seconds == 0
    for bad in ({"RECONCILE_ENTITIES": "Invoice;DROP"}, {"RECONCILE_EVERY_HOURS": "-1"}):
        with pytest.raises(ConfigurationError):
            load_change_feed_settings(bad)

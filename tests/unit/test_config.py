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

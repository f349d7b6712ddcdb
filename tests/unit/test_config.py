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

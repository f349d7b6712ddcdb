"""The copy table, the language choice, branding and the pages built from them."""

from __future__ import annotations

import re
import string

import pytest

from qbo_connect.config import load_settings
from qbo_connect.connect import pages
from qbo_connect.connect.branding import (
    DEFAULT_ACCENT,
    Branding,
    check_accent,
    check_url,
    contrast_ratio,
    text_color_on,
)
from qbo_connect.connect.copy_table import (
    COPY,
    EN,
    FR_CA,
    LANGUAGES,
    SCOPE_WORDS,
    UI,
    choose_language,
)
from qbo_connect.connect.outcomes import Outcome
from qbo_connect.errors import ConfigurationError

PLACEHOLDERS = {"app", "App", "company"}


def test_every_outcome_but_the_redirect_has_a_row_in_both_languages():
    assert set(COPY) == set(Outcome) - {Outcome.AUTHORIZE}
    for outcome, row in COPY.items():
        assert 200 <= row.status < 600
        for language in LANGUAGES:
            text = row.text(language)
            assert text.title and text.paragraphs, outcome
            for piece in (text.title, *text.paragraphs):
                names = {f for _, f, _, _ in string.Formatter().parse(piece) if f}
                assert names <= PLACEHOLDERS, (outcome, language, names)
        assert row.en != row.fr, f"{outcome} is not translated"
    assert set(UI[EN]) == set(UI[FR_CA])
    assert set(SCOPE_WORDS[EN]) == set(SCOPE_WORDS[FR_CA])


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, EN),
        ("", EN),
        ("fr-CA,fr;q=0.9,en;q=0.8", FR_CA),
        ("fr", FR_CA),
        ("fr-FR", FR_CA),
        ("en-CA,fr-CA;q=0.9", EN),
        ("de-DE,fr;q=0.5,en;q=0.4", FR_CA),
        ("de-DE,en;q=0.5,fr;q=0.4", EN),
        ("fr;q=0,en", EN),
        ("*", EN),
        ("fr;q=abc", EN),
        ("x" * 5000, EN),
    ],
)
def test_the_language_follows_accept_language(header, language):
    assert choose_language(header) == language


def test_the_button_text_is_black_or_white_whichever_reads_better():
    assert text_color_on("#2ca01c") == "#000000"  # white on QuickBooks green is 3.4:1
    assert text_color_on(DEFAULT_ACCENT) == "#ffffff"
    for accent in ("#000000", "#ffffff", "#777777", "#2ca01c", "#ff0000", "#0000ff", "#ffff00"):
        assert contrast_ratio(accent, text_color_on(accent)) >= 4.5


def test_branding_values_are_checked_when_settings_load():
    settings = load_settings(
        {
            "APP_NAME": "  Acme   Books ",
            "APP_LOGO_URL": "https://cdn.acme.example/logo.png",
            "ACCENT_COLOR": "#2CA01C",
            "SUPPORT_URL": "mailto:help@acme.example",
            "PRIVACY_URL": "https://acme.example/privacy",
        }
    )
    assert settings.app_name == "Acme Books"
    assert settings.accent_color == "#2ca01c"
    assert settings.support_url == "mailto:help@acme.example"
    for name, value in [
        ("APP_LOGO_URL", "http://cdn.acme.example/logo.png"),
        ("APP_LOGO_URL", "https://user:pw@cdn.acme.example/logo.png"),
        ("APP_LOGO_URL", 'https://cdn.acme.example/"><script>'),
        ("PRIVACY_URL", "javascript:alert(1)"),
        ("SUPPORT_URL", "mailto:nobody"),
        ("ACCENT_COLOR", "green"),
        ("ACCENT_COLOR", "#2ca01c;}body{display:none"),
    ]:
        with pytest.raises(ConfigurationError, match=name):
            load_settings({name: value})
    assert check_accent("") == DEFAULT_ACCENT
    assert check_url("X", "") == ""


BRAND = Branding(
    app_name='Acme <b>"Books"</b>',
    logo_url="https://cdn.acme.example:8443/logo.png",
    accent="#2ca01c",
    support_url="https://acme.example/help",
    privacy_url="https://acme.example/privacy",
    sandbox=True,
)


def test_an_error_page_is_branded_escaped_and_has_a_reference():
    page = pages.outcome_page(
        Outcome.LINK_EXPIRED,
        branding=BRAND,
        return_url="https://app.example/integrations/?a=1&b=2",
        language=FR_CA,
    )
    assert page.status == 410
    assert '<html lang="fr-CA">' in page.body
    assert "Acme &lt;b&gt;&quot;Books&quot;&lt;/b&gt;" in page.body
    assert "<b>" not in page.body
    assert re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}", page.reference)
    assert f"Référence : {page.reference}" in page.body
    assert 'id="support" href="https://acme.example/help"' in page.body
    assert 'href="https://app.example/integrations/?a=1&amp;b=2"' in page.body
    assert "Retourner à Acme" in page.body
    assert 'id="sandbox"' in page.body
    csp = page.headers["Content-Security-Policy"]
    assert "img-src https://cdn.acme.example:8443;" in csp
    style = page.body.split("<style>")[1].split("</style>")[0]
    assert f"'{pages.style_hash(style)}'" in csp
    assert ".button{background:#2ca01c;color:#000000}" in style


def test_a_page_without_branding_loads_no_image_and_shows_no_reference_when_all_is_well():
    page = pages.outcome_page(
        Outcome.CREATED, branding=Branding(), company_name="Sandbox Co", realm_id="1"
    )
    assert page.status == 200 and page.reference == ""
    assert "img-src 'none'" in page.headers["Content-Security-Policy"]
    assert "<img" not in page.body and "<header>" not in page.body
    assert "Your QuickBooks company “Sandbox Co” is connected to the app you came from." in (
        page.body.replace("&quot;", '"')
    )
    assert "What happens next" in page.body


def test_the_landing_page_names_the_app_the_account_and_the_access_in_plain_words():
    page = pages.landing_page(
        Outcome.LANDING,
        session="s" * 43,
        authorize_origin="https://appcenter.intuit.com",
        scopes=["openid", "com.intuit.quickbooks.accounting", "email"],
        tenant_name="Bob's Bikes",
        branding=BRAND,
    )
    assert page.status == 200
    assert "<h1>Acme &lt;b&gt;&quot;Books&quot;&lt;/b&gt; wants to connect to your QuickBooks" in (
        page.body
    )
    assert (
        "Your account at Acme &lt;b&gt;&quot;Books&quot;&lt;/b&gt;: Bob&#x27;s Bikes" in page.body
    )
    assert page.body.index("your accounting data") < page.body.index("your email address")
    assert (
        "form-action 'self' https://appcenter.intuit.com"
        in (page.headers["Content-Security-Policy"])
    )


def test_the_router_answers_unknown_paths_and_failures_with_pages_in_the_right_language():
    from devstack.events import build_http_event
    from qbo_connect.connect.web import HttpRouter

    app = HttpRouter("Test")

    @app.get("/boom")
    def boom(event: dict) -> dict:
        raise RuntimeError("secret detail")

    def get(path: str, language: str) -> dict:
        event = build_http_event(
            method="GET",
            raw_path=path,
            raw_query_string="",
            headers=[("accept-language", language)],
            body=b"",
            route_key="$default",
        )
        return app.resolve(event, None)

    missing = get("/nothing", "fr-CA")
    assert missing["statusCode"] == 404 and "Page introuvable" in missing["body"]
    failed = get("/boom", "en")
    assert failed["statusCode"] == 500 and "Something went wrong" in failed["body"]
    assert "secret detail" not in failed["body"] and "Traceback" not in failed["body"]


def test_success_is_visible_and_every_page_says_what_to_do_next():
    connected = pages.outcome_page(Outcome.CREATED, company_name="Acme", branding=BRAND)
    assert 'class="badge success"' in connected.body and 'aria-hidden="true"' in connected.body
    assert 'id="next">You can close this tab now and go back to Acme' in connected.body
    with_return = pages.outcome_page(
        Outcome.CREATED, company_name="Acme", branding=BRAND, return_url="https://app.example/x"
    )
    assert 'id="return"' in with_return.body and 'id="next"' not in with_return.body
    for outcome in (Outcome.STATE_EXPIRED, Outcome.OTHER_TENANT, Outcome.INTERNAL_ERROR):
        page = pages.outcome_page(outcome, branding=BRAND)
        assert 'class="badge problem"' in page.body, outcome
        assert 'id="next">Close this tab, go back to Acme' in page.body, outcome
    french = pages.outcome_page(Outcome.RECONNECTED, language="fr-CA", branding=BRAND)
    assert "Vous pouvez fermer cet onglet" in french.body and "badge success" in french.body

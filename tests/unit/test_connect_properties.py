"""Property-based tests (hypothesis) of ``GET /connect`` and ``GET /callback``.

Whatever a browser or an attacker sends (query strings, cookies, headers, malformed encodings,
markup), the answer is never a 5xx, every page is our own escaped HTML (no tag or attribute
that the template does not make), and the table is unchanged, except for the one state item
that a legitimate ``go=1`` on a live link creates. The flow runs on moto with the simulator
over HTTP, as in the other unit tests; events go through ``Request.from_event`` like the
handlers' do.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qbo_connect.connect.request import COOKIE_NAME, Request
from tests.unit.test_connect_flow import Harness

#: The only tags and attributes our page template produces.
TAGS = {"html", "head", "meta", "title", "style", "body", "main", "h1", "p", "form", "input"}
TAGS |= {"button", "a", "header", "footer", "span", "img", "ul", "li", "strong", "div"}
ATTRIBUTES = {"lang", "charset", "name", "content", "method", "action", "type", "value"}
ATTRIBUTES |= {"class", "id", "href", "src", "alt", "aria-hidden"}
NASTY = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'", "&amp;", "%00"]
NASTY += ["%ZZ", "%", "\u202e", "\n", "\r\n", "..", "javascript:", "%E2%80%AE", "5151%0A"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def assert_our_page(result: Any) -> None:
    assert result.status < 500, (result.status, result.outcome)
    if result.status in (301, 302, 303, 307, 308):
        return
    assert result.headers["Content-Type"] == "text/html; charset=utf-8"
    assert result.headers["Content-Security-Policy"].startswith("default-src 'none'")
    parser = _Tags()
    parser.feed(result.body)
    assert parser.tags <= TAGS, parser.tags - TAGS
    assert parser.attributes <= ATTRIBUTES, parser.attributes - ATTRIBUTES
    assert "<script" not in result.body.lower() and "onerror" not in result.body.lower()


text = st.one_of(st.text(max_size=80), st.sampled_from(NASTY))
names = st.sampled_from(
    ["session", "go", "state", "code", "realmId", "error", "error_description", "x", ""]
)


@st.composite
def raw_queries(draw: Any, extra_values: list[str]) -> str:
    """A query string as a browser might send it: encoded, raw, duplicated, or malformed."""
    values = st.one_of(text, st.sampled_from(extra_values)) if extra_values else text
    pairs = draw(st.lists(st.tuples(names, values), max_size=6))
    encode = draw(st.booleans())
    parts = [
        f"{quote(k, safe='') if encode else k}={quote(v, safe='') if encode else v}"
        for k, v in pairs
    ]
    return "&".join(parts) if draw(st.booleans()) else draw(st.text(max_size=200))


@st.composite
def events(draw: Any, extra_values: list[str] = []) -> dict[str, Any]:  # noqa: B006
    cookie = st.one_of(
        st.builds(lambda v: f"{COOKIE_NAME}={v}", text),
        st.builds(lambda k, v: f"{k}={v}", text, text),
        text,
    )
    headers = draw(
        st.dictionaries(
            st.sampled_from(["sec-fetch-site", "Sec-Fetch-Site", "cookie", "host", "origin"]),
            st.one_of(
                text,
                st.sampled_from(["same-origin", "cross-site", "same-site", "none"]),
            ),
            max_size=4,
        )
    )
    event: dict[str, Any] = {
        "rawQueryString": draw(raw_queries(extra_values)),
        "headers": headers,
        "requestContext": {"domainName": draw(st.sampled_from(["api.example.test", "<x>", ""]))},
    }
    if draw(st.booleans()):
        event["cookies"] = draw(st.lists(cookie, max_size=3))
    return event


@pytest.fixture
def h(aws, sim) -> Harness:
    return Harness(aws, sim, app_name='Books <b>"&', scopes=("com.intuit.quickbooks.accounting",))


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_connect_never_5xx_always_escaped_table_unchanged(h, data):
    if not hasattr(h, "live_link"):
        h.live_link = h.link(tenant_name='<script>alert("t")</script>')
    event = data.draw(events([h.live_link]))
    before = h.scan()
    for reconnect in (False, True):
        result = h.flow.connect(
            Request.from_event(APIGatewayProxyEventV2(event)), reconnect=reconnect
        )
        assert_our_page(result)
        after = h.scan()
        if result.status == 302:
            # Only a legitimate go=1 on the live link redirects, creating one state, and only
            # from a same-origin (or header-less) navigation.
            added = [i for i in after if i not in before]
            assert [i["sk"] for i in added] == ["STATE"]
            assert result.headers["Location"].startswith(h.settings.intuit.authorization)
            h.table.delete_item(Key={"pk": added[0]["pk"], "sk": "STATE"})
        else:
            assert after == before


@FUZZ
@given(data=st.data())
def test_callback_never_5xx_always_escaped_table_unchanged(h, data):
    event = data.draw(events())
    before = h.scan()
    calls = h.sim.counters().get("token", 0)
    result = h.flow.callback(Request.from_event(APIGatewayProxyEventV2(event)))
    assert_our_page(result)
    assert result.status != 302
    assert h.scan() == before
    assert h.sim.counters().get("token", 0) == calls

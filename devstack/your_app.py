"""``/your-app``: a stand-in for your application's return page, served by the local stack.

A connect link's ``return_url`` must be under ``AllowedReturnUrls``, and the user comes back
to it with a signed result. Locally there is no application to come back to, so ``make dev``
serves this page on the gateway's port and adds it to ``AllowedReturnUrls``: the connect flow
ends somewhere that shows what your code would see. It verifies the redirect with the README's
own ``verify_return`` snippet (read from README.md, not a copy of it), under the key the stack
generated into Secrets Manager, exactly as the README tells an application to; if the README's
snippet stopped working, this page would say so.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["PATH", "YourApp", "readme_verify_return", "with_your_app"]

#: Where the page is served on the gateway (an API Gateway route would never start with it).
PATH = "/your-app"

_SNIPPET = re.compile(
    r"<!-- return-signature-snippet:start -->\n```python\n(.*?)```\n"
    r"<!-- return-signature-snippet:end -->",
    re.S,
)

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def readme_verify_return(readme: Path) -> Callable[..., dict[str, str] | None]:
    """The README's ``verify_return``, compiled from the README itself."""
    block = _SNIPPET.search(readme.read_text(encoding="utf-8"))
    if block is None:
        raise ValueError(f"{readme} has no return-signature snippet")
    namespace: dict[str, Any] = {}
    # The README's own code, run as a reader would paste it: that is the point of this page.
    exec(compile(block.group(1), str(readme), "exec"), namespace)  # noqa: S102  # nosec B102
    verify = namespace.get("verify_return")
    if not callable(verify):
        raise ValueError(f"{readme}'s snippet defines no verify_return")
    return verify  # type: ignore[no-any-return]


class YourApp:
    """The WSGI page: verify the return redirect and show the result a person can read."""

    def __init__(self, readme: Path, signing_key: Callable[[], str]) -> None:
        self.readme = readme
        self.signing_key = signing_key

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        if request.method not in ("GET", "HEAD"):
            return Response("Method Not Allowed", 405, {"Allow": "GET, HEAD"})(
                environ, start_response
            )
        status, body = self.render(request.url)
        response = Response(body, status, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response(environ, start_response)

    def render(self, url: str) -> tuple[int, str]:
        """The page for the return redirect ``url``: (status, HTML)."""
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(url).query)
        if not query:
            return 200, _page(
                "Your app (local stand-in)",
                "<p>This page stands in for your application's return URL while you try "
                "qbo-connect locally. Create a connect link with "
                f"<code>--return-url {html.escape(url)}</code> (the link <code>make dev</code> "
                "prints already does), connect, and you come back here with the signed "
                "result.</p>",
            )
        try:
            verified = readme_verify_return(self.readme)(url, self.signing_key())
        except Exception as exc:  # the README or the key: say which, never the key
            return 500, _page(
                "Could not verify",
                f"<p>Verifying failed before any check: {html.escape(type(exc).__name__)}.</p>",
            )
        if verified is None:
            return 400, _page(
                "Not verified",
                '<p class="bad">The signature does not match, or the link is older than '
                "10 minutes. Your application must not believe this redirect.</p>",
            )
        realm, tenant = verified.get("realm_id", ""), verified.get("tenant_id", "")
        next_step = (
            f"qbo-connect --local api GET companyinfo/{realm} --realm {realm} --tenant {tenant}"
        )
        rows = "".join(
            f"<tr><th>{html.escape(name)}</th><td><code>{html.escape(verified.get(name, ''))}"
            "</code></td></tr>"
            for name in ("status", "realm_id", "tenant_id", "link_id", "ts")
        )
        return 200, _page(
            "Verified",
            '<p class="ok">&#10003; The return redirect is genuine: <code>verify_return</code> '
            "from the README accepted it with the stack's return signing key.</p>"
            f"<table>{rows}</table>"
            "<p>Next: your code checks that <code>tenant_id</code> is the signed-in user's "
            "tenant, then calls QuickBooks through the service, e.g.</p>"
            f"<pre><code>{html.escape(next_step)}</code></pre>",
        )


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;"
        "line-height:1.5}.ok{color:#0a6b2d;font-weight:600}.bad{color:#a4161a;font-weight:600}"
        "th{text-align:left;padding-right:1rem}code{word-break:break-all}"
        f"</style></head><body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


def with_your_app(gateway: WsgiApp, your_app: WsgiApp) -> WsgiApp:
    """``gateway``, with ``/your-app`` answered by ``your_app`` instead."""

    def dispatch(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == PATH or path.startswith(PATH + "/"):
            return your_app(environ, start_response)
        return gateway(environ, start_response)

    return dispatch

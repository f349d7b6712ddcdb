"""Intuit's Disconnect URL (``GET /disconnected?realmId=...``): a hint, passed on, never acted on.

When a user disconnects the app inside QuickBooks, Intuit revokes the grant and sends the
user's browser here with ``realmId``. Nothing in that request is authenticated: anyone can send
it, for any realm, from any address. So this function does the same thing for every request
with a well-formed realm id, connected or not: it queues a ``disconnect_hint`` message for the
refresh worker and shows the page. It reads nothing, so neither its answer nor its timing says
whether a realm is a customer, and a request here can never run a refresh in this function.

The worker verifies the hint with Intuit out of band, at most once per realm per
``disconnect_hint_realm_interval_seconds`` (a day by default), see
``qbo_connect.sweep.disconnect_check``. A disconnect that the limit delays is still found by the
next keep-alive refresh, which meets Intuit's ``invalid_grant`` like any other.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools import Logger

from qbo_connect import validation
from qbo_connect.contracts import DISCONNECT_HINT, RefreshMessage

logger = Logger(child=True)


def announce(send: Callable[[str], object], realm_id: str | None) -> str:
    """Queue the hint for the worker; never fails the page (the person sees it regardless).

    ``send`` puts one message body on the refresh queue. The verdict is for the log only.
    """
    if not realm_id or not validation.is_realm_id(realm_id):
        logger.info("disconnect hint ignored: not a realm id")
        return "invalid_realm"
    try:
        send(RefreshMessage(realm_id=realm_id, kind=DISCONNECT_HINT).to_body())
    except Exception:
        logger.exception("disconnect hint not queued", extra={"realm_id": realm_id})
        return "failed"
    logger.info("disconnect hint queued", extra={"realm_id": realm_id})
    return "queued"

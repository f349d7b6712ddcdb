"""The connect family: the hosted connect flow and the Disconnect URL (ConnectFunction,
CallbackFunction), over the vault's family."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from qbo_connect.connect.branding import Branding
from qbo_connect.connect.flow import ConnectFlow
from qbo_connect.connect.pages import branding_from
from qbo_connect.errors import ConfigurationError
from qbo_connect.store.single_use import SingleUseRepository
from qbo_connect.wiring import aws, vault


def branding() -> Branding:
    """This deployment's branding; the neutral default if its settings cannot load (the page
    that says so must still render)."""
    try:
        return branding_from(aws.settings())
    except ConfigurationError:
        return Branding()


@lru_cache(maxsize=1)
def connect_flow() -> ConnectFlow:
    return ConnectFlow(
        settings=aws.settings(),
        single_use=SingleUseRepository(aws.table()),
        adopter=vault.adopter(),
        history=vault.history(),
        intuit=vault.intuit,
        return_key=aws.return_signing_key,
    )


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return aws.aws_client("sqs")


def send_disconnect_hint(body: str) -> None:
    """Put a Disconnect URL hint on the refresh queue, for the worker to verify."""
    _sqs().send_message(QueueUrl=aws.settings().refresh_queue_url, MessageBody=body)


def _reset() -> None:
    connect_flow.cache_clear()
    _sqs.cache_clear()

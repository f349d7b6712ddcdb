"""The connect family: the hosted connect flow and the Disconnect URL (ConnectFunction,
CallbackFunction), over the vault's family."""

from __future__ import annotations

from functools import lru_cache

from qbo_connect.connect.branding import Branding
from qbo_connect.connect.disconnect_hint import DisconnectHints
from qbo_connect.connect.flow import ConnectFlow
from qbo_connect.connect.pages import branding_from
from qbo_connect.errors import ConfigurationError
from qbo_connect.store.rate_slots import RateSlots
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
def disconnect_hints() -> DisconnectHints:
    return DisconnectHints(
        vault.vault(),
        connections=vault.connections(),
        rate_slots=RateSlots(aws.table()),
        settings=aws.settings(),
        cipher=vault.cipher(),
        intuit=vault.intuit,
        history=vault.history(),
    )


def _reset() -> None:
    connect_flow.cache_clear()
    disconnect_hints.cache_clear()

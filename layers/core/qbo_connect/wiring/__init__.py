"""The composition root: the only code that builds AWS clients, the Intuit client, the store
repositories and the services.

Handlers import from here; no other module of the package does, at module level or inside a
function. One module per function family, so a function's cold start loads only its own family
(the webhook gateway never imports the vault, KMS or the Intuit client):

- ``aws``: settings, boto3 clients, the table, secrets (shared by every family);
- ``vault``: the store repositories, sealing, the Intuit client, the outbox and the token vault
  (GetTokenFunction);
- ``connect``: the hosted connect flow and the Disconnect URL (ConnectFunction, CallbackFunction);
- ``operations``: ConnectionsFunction's actions;
- ``sweep``: the sweep and the refresh worker;
- ``webhooks``: the webhook gateway and processor;
- ``api``: the QuickBooks API proxy and its governor (QuickBooksApiFunction);
- ``usage``: the CorePlus meter and budget guard;
- ``changes``: the change feed's reconciliation and its schedule.

Each getter builds once per container and is reused by warm invocations. Tests call
:func:`reset` after changing the environment.
"""

from __future__ import annotations

import sys


def reset() -> None:
    """Forget every setting, client, secret and service built so far in this process.

    Only the families already imported are reset (importing the others here would defeat the
    per-family cold path).
    """
    for name in sorted(sys.modules):
        if name.startswith("qbo_connect.wiring."):
            reset_family = getattr(sys.modules[name], "_reset", None)
            if reset_family is not None:
                reset_family()

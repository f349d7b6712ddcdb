"""QuickBooks webhooks: verified at the door, queued, deduplicated and fanned out per tenant.

Intuit sends every change notification of every connected company to one URL. The path is split
in two so the answer to Intuit is fast and never depends on per-entity work:

* ``gateway`` (WebhookFunction, ``POST /webhooks``): bounds the body, verifies the
  ``intuit-signature`` HMAC over the raw bytes (``signature``), parses either payload shape into
  :class:`payload.EntityChange` values (``payload``), enqueues them and answers 200.
* ``processor`` (WebhookProcessorFunction, SQS): deduplicates each change by its event id with a
  conditional write (``ledger``), maps realm -> tenant through ConnectionsTable, and publishes one
  ``quickbooks.entity_changed`` event per change on EventBridge.

``settings`` holds the knobs of both, read once per container from environment variables.
"""

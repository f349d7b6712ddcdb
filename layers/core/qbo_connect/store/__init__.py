"""DynamoDB access: the only package that touches ConnectionsTable, one repository per item kind.

Every write that changes a connection is a conditional write; a failed condition becomes a
named domain exception (``errors.StoreConflict`` subclasses), never a silent overwrite. There is
no read-modify-write without a condition anywhere in here.

Item shapes (single table, ``pk``/``sk``):

- Connection: ``pk = "REALM#<realm_id>"``, ``sk = "CONNECTION"``. Carries ``tenant_id`` and
  ``realm_id`` (TenantIndex), ``version`` (bumped by every token write), the wrapped data key,
  the sealed tokens, their expiry times, the refresh lease (``lease_owner``, ``lease_until``),
  invalid_grant bookkeeping, and, while active, ``due_shard``/``due_at`` (DueIndex, sparse).
  Pending lifecycle events live on the item as ``outbox_<event_id>`` attributes (see
  ``events.py``); a connection that is no longer active stays in DueIndex while it has any, so
  the sweep delivers them.

Every write that boto3 may retry after its first attempt was applied (the answer lost)
recognises its own earlier success instead of failing its condition: the lease carries our
owner id, a commit records ``committed_by``, an outbox entry's event id is in its attribute
name, the worker's lease (``lease_if_due``) accepts its own owner id, the sweep's run lease
carries its owner and its state write records ``last_run``. Meeting our own write is success,
not a conflict.
- History entry: ``pk = "REALM#<realm_id>"``, ``sk = "HISTORY#<epoch>#<id>"``: one outcome of
  the connection (see ``history``), written once, removed by TTL. It carries no ``tenant_id``
  and no ``due_shard``, so neither index sees it.
- Fleet-level breaker (``breaker.py``): ``pk = "FLEET#invalid_grant"``, ``sk`` = a time bucket,
  one ``r_<realm_id>`` attribute (the time of the last rejection) per connection Intuit
  rejected in that bucket, ``ttl``; and ``pk = "FLEET#breaker"`` holding ``cleared_at``. Both
  are blind, idempotent SETs (no read-modify-write).
- OAuth state: ``pk = "STATE#<sha256>"``; connect link: ``pk = "LINK#<sha256>"``; both with
  ``sk`` = the kind, an ``expires_at`` checked on read (moto and DynamoDB TTL are lazy) and
  ``ttl`` for DynamoDB to clean up.
- Sweep run state: ``pk = "SWEEP#DueIndex"``, ``sk = "STATE"``: the sweep's run lease and,
  per DueIndex shard, its watermark and the pairs it last enqueued (see the section at the end).
  No ``tenant_id``, no ``due_shard``: no index sees it.
- QuickBooks API governor (``governor.py``): ``pk = "GOVERNOR#<realm_id>"``, ``sk =
  "GOVERNOR"``: the realm's slot timeline, in-flight permits and cool-down, changed only by
  compare-and-set on its version ``v`` (see ``qbo_connect.api.governor``); ``ttl``.
- Change feed (``change_marks.py``): ``pk = "CHANGE#<realm_id>#<entity>#<entity_id>"``, ``sk =
  "CHANGE"``: the last change time published for that entity and its event id, ``ttl`` of at
  least 31 days; and the realm's reconciliation watermark, ``pk = "REALM#<realm_id>"``, ``sk =
  "CHANGES"`` (no ``tenant_id``, no ``due_shard``: no index sees it).
"""

"""The sweep's run state (``SWEEP#DueIndex`` / ``STATE``): the run lease, each shard's watermark."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qbo_connect.errors import (
    StoreConflict,
)
from qbo_connect.store.table import (
    Repository,
    Update,
    number,
)


class SweepStateRepository(Repository):
    """One item: the sweep's run lease, ``last_run`` and a ``shard_NN`` map per DueIndex shard."""

    #
    # One item, ``pk = "SWEEP#DueIndex"``, ``sk = "STATE"``, with no ``tenant_id`` and no
    # ``due_shard``, so no index sees it. It holds the run lease (``run_owner``, ``run_until``:
    # one sweep at a time), ``last_run`` (the id of the last run that saved its state, so the
    # retry of that write recognises it) and one ``shard_NN`` map per DueIndex shard:
    # ``watermark`` (the sweep's clock when it last read the shard up to there), ``stale_at``
    # (when it last re-enqueued the shard's stale entries) and ``sent`` (the ``(realm_id,
    # due_at)`` pairs it enqueued that the next run's range still covers, as "realm due" strings).

    def begin_sweep_run(self, *, owner: str, now: float, until: float) -> SweepState | None:
        """Take the sweep's run lease; returns the stored state, or None if another run holds it.

        One conditional UpdateItem whose ``ALL_NEW`` answer carries the shards' state, so the
        run needs no read. The condition admits ``owner`` itself: boto3's retry of a write that
        was applied (its answer lost) meets its own lease and succeeds.
        """
        update = Update().set("run_owner", owner).set("run_until", until)
        update.set("run_started_at", now)
        condition = (
            "attribute_not_exists(#run_until)"
            f" OR #run_until < {update.value('now', now)}"
            " OR #run_owner = :v_run_owner"
        )
        try:
            item = self._update(SWEEP_STATE_KEY, update, condition, StoreConflict)
        except StoreConflict:
            return None
        return SweepState.from_item(item)

    def end_sweep_run(self, *, owner: str, now: float, shards: Mapping[str, ShardMark]) -> bool:
        """Save the shards' new state and release the run lease; False if the lease was lost.

        Conditioned on our lease, so a run whose lease was taken over (it outlived
        ``run_until``) writes nothing. The write records ``last_run``, so boto3's retry of this
        write after its answer was lost meets it (lease gone, ``last_run`` ours) and succeeds;
        a retry meeting another run's live lease fails and leaves that lease alone.
        """
        update = Update()
        for shard, mark in shards.items():
            update.set(_shard_attribute(shard), mark.to_item())
        update.set("last_run", owner).set("last_run_at", now)
        update.remove("run_owner", "run_until", "run_started_at")
        me = update.value("me", owner)
        condition = f"#run_owner = {me} OR (attribute_not_exists(#run_owner) AND #last_run = {me})"
        return self._try_update(SWEEP_STATE_KEY, update, condition)


SWEEP_STATE_KEY = {"pk": "SWEEP#DueIndex", "sk": "STATE"}


def _shard_attribute(shard: str) -> str:
    """``DUE#07`` -> ``shard_07`` (an attribute name that needs no escaping)."""
    return "shard_" + shard.split("#", 1)[-1]


@dataclass(frozen=True)
class ShardMark:
    """What the sweep remembers of one DueIndex shard between runs (see ``sweep.py``)."""

    watermark: float
    stale_at: float
    sent: frozenset[tuple[str, float]] = frozenset()

    def to_item(self) -> dict[str, Any]:
        return {
            "watermark": number(self.watermark),
            "stale_at": number(self.stale_at),
            "sent": sorted(f"{realm} {due_at:.3f}" for realm, due_at in self.sent),
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ShardMark:
        sent = set()
        for entry in item.get("sent") or ():
            realm, _, due_at = str(entry).partition(" ")
            sent.add((realm, round(float(due_at), 3)))
        return cls(
            watermark=float(item["watermark"]),
            stale_at=float(item.get("stale_at") or 0),
            sent=frozenset(sent),
        )


@dataclass(frozen=True)
class SweepState:
    """The run-state item as the lease write returned it: each shard's mark, by shard name."""

    shards: dict[str, ShardMark]

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> SweepState:
        shards = {
            f"DUE#{name.removeprefix('shard_')}": ShardMark.from_item(value)
            for name, value in item.items()
            if name.startswith("shard_") and isinstance(value, Mapping)
        }
        return cls(shards=shards)

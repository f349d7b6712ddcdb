"""Per-realm request governor shared by every container: rate, in-flight cap and cool-down.

The schedule. Each realm has one timeline of request *slots*, consecutive intervals of length
``T`` (:meth:`Limits.spacing`). A request may be sent only inside a slot its container holds,
and each slot carries at most one request. In any window of length ``w``, the slots that touch
it number at most ``ceil(w / T) + 1``; with ``T = max(1 / (per_second - 1), 60 / (per_minute -
1))`` that is at most ``per_second`` for every one-second window and at most ``per_minute`` for
every minute, wherever the window starts (sliding windows, not buckets). Batch calls also need
a batch interval of length ``60 / (batch_per_minute - 1)`` on a timeline of their own, by the
same argument.

Chunks. The shared state (``qbo_connect.store.governor``) keeps only the start of the first
slot nobody holds (``next_at``). A container takes a chunk of ``n`` consecutive slots with one
compare-and-set write (``next_at += n * T``) and spends them locally: at steady state a write
serves several calls. A slot not used before its end is lost; leased-but-unspent budget can
only make the realm send less, never more, because slots are never handed out twice and never
reused after their end.

In flight. Containers lease in-flight *permits* (``permits[container] = (count, until)``) for
a few seconds (``PERMIT_HOLD_SECONDS``); the counts of live leases never sum above
``max_in_flight``. A call starts only under a permit that lives at least ``PERMIT_MARGIN_SECONDS``
longer, and while calls are in flight :meth:`Governor.holding` renews the lease every
``PERMIT_RENEW_SECONDS`` (one write per renewal, not per call). An idle container writes
nothing: its permits lapse on their own within ``PERMIT_HOLD_SECONDS``; a container that dies
does the same, so a stranded permit is free again after at most that long.

Cool-down. A QuickBooks throttle sets ``cool_until`` in the shared item; a container learns it
at its next write (within one chunk) and sends nothing before it.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field, replace

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from qbo_connect.errors import RateLimited
from qbo_connect.store.governor import GovernorState, GovernorTable

logger = Logger(child=True)

#: A container's in-flight permits live this long unless renewed (what a crash can strand).
PERMIT_HOLD_SECONDS = 5.0
#: A call starts only under a permit that lives at least this much longer.
PERMIT_MARGIN_SECONDS = 1.5
#: While calls are in flight, their container renews its permits this often.
PERMIT_RENEW_SECONDS = 2.0
#: The most slots one write takes (about two seconds of the realm's rate at the defaults).
MAX_CHUNK = 16
#: A chunk covers this many seconds of the container's recent call rate.
CHUNK_SECONDS_OF_DEMAND = 3
#: Compare-and-set attempts of one lease before the caller waits and tries again.
MAX_WRITE_ATTEMPTS = 8
#: How often a caller waiting for an in-flight permit looks again.
PERMIT_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Limits:
    """The configured limits of one realm (QuickBooksRequestsPerMinute and the others)."""

    per_minute: int = 450
    per_second: int = 8
    max_in_flight: int = 8
    batch_per_minute: int = 36

    def __post_init__(self) -> None:
        if min(self.per_minute, self.per_second, self.batch_per_minute) < 2:
            raise ValueError("request limits must be at least 2")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")

    def spacing(self) -> float:
        """Slot length: slots touching any window of ``w`` seconds are at most ceil(w/T) + 1."""
        return max(1.0 / (self.per_second - 1), 60.0 / (self.per_minute - 1))

    def batch_spacing(self) -> float:
        return max(60.0 / (self.batch_per_minute - 1), self.spacing())


@dataclass(frozen=True)
class Ticket:
    """Room for one request: released with :meth:`Governor.release` when its answer is in."""

    realm_id: str
    waited: float
    #: The start of the slot the request must be sent in (it ends one spacing later).
    slot_at: float = 0.0


@dataclass
class _Realm:
    """What this container holds for a realm."""

    shared: GovernorState = field(default_factory=GovernorState)
    slots: list[float] = field(default_factory=list)
    batch_slots: list[float] = field(default_factory=list)
    permits: int = 0
    permits_until: float = 0.0
    in_flight: int = 0
    cool_until: float = 0.0
    waiting: int = 0
    recent: deque[float] = field(default_factory=deque)


@dataclass(eq=False)
class Governor:
    """Room to call QuickBooks for a realm, shared with other containers through the table."""

    table: GovernorTable
    limits: Limits
    _: KW_ONLY
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    #: Who holds a slot, in the shared item (a container's own id by default).
    container_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _realms: dict[str, _Realm] = field(default_factory=dict, init=False, repr=False)

    # ----- calls ---------------------------------------------------------------------------

    def acquire(self, realm_id: str, *, batch: bool, max_wait: float) -> Ticket:
        """Wait (at most ``max_wait`` seconds) for a slot and a permit, else RateLimited."""
        started = self.clock()
        deadline = started + max(0.0, max_wait)
        with self._lock:
            state = self._realms.setdefault(realm_id, _Realm())
            state.waiting += 1
        try:
            while True:
                with self._lock:
                    now = self.clock()
                    try:
                        pause, slot_at = self._try_take(realm_id, state, now, deadline, batch)
                    except (ClientError, BotoCoreError) as exc:
                        # Without the shared state no container can know the realm's rate:
                        # nothing is sent, and the caller may try again shortly.
                        logger.warning(
                            "governor state unavailable; call not sent",
                            extra={"realm_id": realm_id, "error_type": type(exc).__name__},
                        )
                        raise RateLimited(
                            f"realm {realm_id}: the rate governor's state is unavailable; "
                            "nothing was sent to QuickBooks",
                            reason="store_unavailable",
                            retry_after_seconds=1,
                        ) from None
                    if pause is None:
                        return Ticket(realm_id, waited=now - started, slot_at=slot_at)
                if now + pause > deadline + 1e-9:
                    raise RateLimited(
                        f"realm {realm_id}: no room to call QuickBooks within max_wait_seconds",
                        reason="governor",
                        retry_after_seconds=max(1, math.ceil(pause)),
                    )
                self.sleep(max(pause, 0.0))
        finally:
            with self._lock:
                state.waiting -= 1

    def too_late(self, ticket: Ticket) -> bool:
        """Has the ticket's slot ended? Then the request must not be sent: a request sent after
        its slot could arrive together with the next slots' and break a window's limit (a busy
        machine can delay a thread between taking a slot and sending). Release the ticket and
        acquire another."""
        return self.clock() > ticket.slot_at + self.limits.spacing()

    def release(self, ticket: Ticket) -> None:
        """The request's answer is in: its permit is free for this container's next call (and,
        unless renewed, for every container within ``PERMIT_HOLD_SECONDS``). No write."""
        with self._lock:
            self._realms[ticket.realm_id].in_flight -= 1

    @contextmanager
    def holding(self, ticket: Ticket) -> Iterator[None]:
        """Keep this container's permits alive while the ticket's request is in flight."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(PERMIT_RENEW_SECONDS):
                with self._lock:
                    state = self._realms[ticket.realm_id]
                    if state.in_flight > 0:
                        try:
                            self._lease(ticket.realm_id, state, self.clock(), keep=state.in_flight)
                        except (ClientError, BotoCoreError):
                            # The permits lapse on their own after their hold; the request
                            # in flight is not affected.
                            logger.warning("governor permits not renewed")

        renewer = threading.Thread(target=renew, name="permit-renewer", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            self.release(ticket)

    def cool_down(self, realm_id: str, seconds: float) -> float:
        """QuickBooks throttled the realm: nobody sends for ``seconds``. Returns the end."""
        with self._lock:
            state = self._realms.setdefault(realm_id, _Realm())
            now = self.clock()
            until = now + seconds
            self._cool_locally(state, until)
            for _ in range(MAX_WRITE_ATTEMPTS):
                seen = state.shared
                if seen.cool_until >= until:
                    self._cool_locally(state, seen.cool_until)
                    return seen.cool_until
                new = replace(
                    seen, version=seen.version + 1, cool_until=until, write_id=_write_id()
                )
                try:
                    current = self.table.write(realm_id, seen, new, now=now)
                except (ClientError, BotoCoreError) as exc:
                    # This container holds back already; the others learn of the throttle
                    # from QuickBooks' next 429 (which the caller sees as QuickBooks gave it).
                    logger.warning(
                        "cool-down not shared: governor state unavailable",
                        extra={"realm_id": realm_id, "error_type": type(exc).__name__},
                    )
                    return until
                if current is None:
                    state.shared = new
                    return until
                state.shared = current
            return until

    # ----- inside the lock -----------------------------------------------------------------

    def _try_take(
        self, realm_id: str, state: _Realm, now: float, deadline: float, batch: bool
    ) -> tuple[float | None, float]:
        """Take a slot and a permit (None, and the slot's start), or say how long to wait
        before looking again."""
        if state.cool_until > now:
            return state.cool_until - now, 0.0
        spacing = self.limits.spacing()
        state.slots = [s for s in state.slots if s + spacing > now]
        state.batch_slots = [s for s in state.batch_slots if s + spacing > now]
        pool = state.batch_slots if batch else state.slots
        permit_ok = (
            state.in_flight < state.permits and state.permits_until - now >= PERMIT_MARGIN_SECONDS
        )
        if pool and pool[0] <= now and permit_ok:
            slot_at = pool.pop(0)
            state.in_flight += 1
            state.recent.append(now)
            while state.recent and state.recent[0] < now - 1.0:
                state.recent.popleft()
            return None, slot_at
        if not pool or not permit_ok:
            if self._lease(
                realm_id,
                state,
                now,
                need_slot=not pool,
                batch=batch,
                need_permit=not permit_ok,
                deadline=deadline,
            ):
                return 0.0, 0.0
            if state.cool_until > now:
                return state.cool_until - now, 0.0
            if not pool:
                return max(state.shared.next_at - now, PERMIT_POLL_SECONDS), 0.0
            return PERMIT_POLL_SECONDS * random.uniform(0.5, 1.5), 0.0
        return pool[0] - now, 0.0

    def _chunk(self, state: _Realm) -> int:
        """How many slots to take: enough for what this container is doing now."""
        demand = CHUNK_SECONDS_OF_DEMAND * len(state.recent)
        return max(1, min(MAX_CHUNK, max(state.waiting, demand)))

    def _lease(
        self,
        realm_id: str,
        state: _Realm,
        now: float,
        *,
        need_slot: bool = False,
        batch: bool = False,
        need_permit: bool = False,
        deadline: float = 0.0,
        keep: int | None = None,
    ) -> bool:
        """One compare-and-set write taking slots and/or permits (or giving permits back).

        True when something was granted; False when there is nothing to grant yet (the slots
        start after the caller's deadline, every permit is held, or a cool-down is on).
        """
        spacing = self.limits.spacing()
        for _ in range(MAX_WRITE_ATTEMPTS):
            seen = state.shared
            if seen.cool_until > now:
                self._cool_locally(state, seen.cool_until)
                return False
            new = replace(seen, version=seen.version + 1, write_id=_write_id())
            new.permits = {c: p for c, p in seen.permits.items() if p[1] > now}
            slots: list[float] = []
            if need_slot:
                start = max(seen.next_at, now)
                if batch:
                    start = max(start, seen.batch_next_at)
                if start > deadline:
                    return False
                count = 1 if batch else self._chunk(state)
                slots = [start + i * spacing for i in range(count)]
                new.next_at = start + count * spacing
                if batch:
                    new.batch_next_at = start + self.limits.batch_spacing()
            permits = state.permits
            # Permits are renewed by every write this container makes anyway (a slot lease
            # renews them for free); a write for permits alone happens only when needed.
            touch_permits = need_permit or keep is not None or state.permits > 0
            if touch_permits:
                others = sum(n for c, (n, _) in new.permits.items() if c != self.container_id)
                if keep is not None:
                    wanted = keep
                elif need_permit:
                    wanted = max(state.in_flight + 1, state.permits)
                else:
                    wanted = state.permits
                permits = min(wanted, self.limits.max_in_flight - others)
                if need_permit and keep is None and permits <= state.in_flight and not slots:
                    return False  # every permit is held elsewhere: wait for one
                permits = max(permits, state.in_flight)
                new.permits[self.container_id] = (permits, now + PERMIT_HOLD_SECONDS)
            current = self.table.write(realm_id, seen, new, now=now)
            if current is None:
                state.shared = new
                (state.batch_slots if batch else state.slots).extend(slots)
                if touch_permits:
                    state.permits, state.permits_until = permits, now + PERMIT_HOLD_SECONDS
                return True
            state.shared = current
        return False

    def _cool_locally(self, state: _Realm, until: float) -> None:
        state.cool_until = max(state.cool_until, until)
        state.slots.clear()
        state.batch_slots.clear()


def _write_id() -> str:
    return uuid.uuid4().hex

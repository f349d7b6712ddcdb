"""Where moto differs from AWS in ways our guarantees depend on, and the fixes.

Test and local-stack infrastructure only: none of this touches the service's code.

* DynamoDB conditional writes: moto evaluates a ``ConditionExpression`` and applies the update
  in separate steps without a lock, so two threads of one moto server can both pass the same
  condition. Real DynamoDB applies a conditional write to an item atomically, and the refresh
  protocol relies on exactly that, so :class:`AtomicDynamoDB` serves DynamoDB requests one at a
  time. Otherwise a race in moto would look like a race in the vault. In-process ``mock_aws``
  (the fast unit tests) has the same gap; :func:`apply_dynamodb_backend_lock` closes it there.
* SQS: ``Queue.delete_message`` rebuilds the message list without the lock ``add_message``
  takes, so a message sent at that moment can be lost (seen once in 10,000 in bench/sweep.py;
  real SQS does not lose messages). :func:`apply_sqs_fixes` takes the lock. It also makes two
  O(queue depth) walks O(1) (a receive recomputed every queue attribute with a slow clock),
  without changing what SQS answers.
* KMS: moto makes an RSA-2048 private key for every key it creates, a symmetric one included
  (where only Sign, Verify and GetPublicKey of an asymmetric key would use it): about 0.1 s of
  CPU per key, and the fast tests create one per test. :func:`apply_kms_fixes` makes it on first
  use instead; what KMS answers does not change.
* The moto server's per-request overhead: to route each request it lists moto's package folder
  (a ``listdir`` and an ``isdir`` per service, about a quarter of the time a DynamoDB request
  spends under the lock above), and EventBridge builds a JSONPath parser for every event it
  delivers. :func:`apply_server_fixes` lists the folder once and keeps the last 512 parsed
  paths; the answers are the same.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_applied = False
_kms_applied = False
_server_applied = False
_apply_lock = threading.Lock()


class AtomicDynamoDB:
    """WSGI middleware around moto's app: one DynamoDB request at a time, others untouched."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self._lock:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]


_DYNAMODB_ITEM_OPERATIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "query",
    "scan",
    "batch_write_item",
    "transact_write_items",
)
_dynamodb_lock = threading.RLock()
_dynamodb_locked = False


def apply_dynamodb_backend_lock() -> None:
    """Make moto's DynamoDB item operations atomic in this process (idempotent).

    For in-process ``mock_aws``, where there is no WSGI app to wrap: each item operation of the
    backend runs under one lock, as a conditional write runs atomically in DynamoDB.
    """
    global _dynamodb_locked
    with _apply_lock:
        if _dynamodb_locked:
            return
        from moto.dynamodb.models import DynamoDBBackend

        for name in _DYNAMODB_ITEM_OPERATIONS:
            original = getattr(DynamoDBBackend, name)

            def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                with _dynamodb_lock:
                    return __original(self, *args, **kwargs)

            setattr(DynamoDBBackend, name, locked)
        _dynamodb_locked = True


def apply_sqs_fixes() -> None:
    """Patch moto's SQS models in this process (idempotent)."""
    global _applied
    with _apply_lock:
        if _applied:
            return
        import moto.sqs.models as sqs_models

        original_unix_time = sqs_models.unix_time

        def unix_time(dt: Any = None) -> float:
            return time.time() if dt is None else float(original_unix_time(dt))

        def still_retained(self: Any, queue_name: str, message: Any) -> bool:
            queue = self.get_queue(queue_name)
            return bool(
                int(queue.message_retention_period) + message.sent_timestamp / 1000 > time.time()
            )

        original_delete = sqs_models.Queue.delete_message

        def delete_message(self: Any, receipt_handle: str) -> Any:
            with self._messages_lock:  # add_message appends under this lock
                return original_delete(self, receipt_handle)

        sqs_models.unix_time = unix_time
        sqs_models.unix_time_millis = lambda dt=None: unix_time(dt) * 1000.0
        # Patching moto's classes is the point here; mypy rightly dislikes it elsewhere.
        setattr(  # noqa: B010
            sqs_models.SQSBackend, "is_message_valid_based_on_retention_period", still_retained
        )
        setattr(sqs_models.Queue, "delete_message", delete_message)  # noqa: B010
        _applied = True


class _PrivateKeyOnFirstUse:
    """Stands for moto's private key of a KMS key; makes it when one of its methods is used."""

    def __init__(self, make: Callable[[str], Any], key_spec: str) -> None:
        self._make = make
        self._key_spec = key_spec
        self._key: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._key is None:
                self._key = self._make(self._key_spec)
        return getattr(self._key, name)


def apply_kms_fixes() -> None:
    """Patch moto's KMS models in this process (idempotent): private keys made on first use."""
    global _kms_applied
    with _apply_lock:
        if _kms_applied:
            return
        import moto.kms.models as kms_models

        make = kms_models.generate_private_key

        def on_first_use(key_spec: str) -> Any:
            return _PrivateKeyOnFirstUse(make, key_spec)

        setattr(kms_models, "generate_private_key", on_first_use)  # noqa: B010
        _kms_applied = True


def apply_server_fixes() -> None:
    """Patch the moto server's request routing and EventBridge's JSONPath (idempotent)."""
    global _server_applied
    with _apply_lock:
        if _server_applied:
            return
        import jsonpath_ng.ext
        import moto.backends as moto_backends

        modules = tuple(moto_backends.list_of_moto_modules())
        setattr(moto_backends, "list_of_moto_modules", lambda: modules)  # noqa: B010
        # moto imports jsonpath_ng.ext.parse inside the function that uses it, at each event.
        parse = functools.lru_cache(maxsize=512)(jsonpath_ng.ext.parse)
        setattr(jsonpath_ng.ext, "parse", parse)  # noqa: B010
        _server_applied = True


def moto_app() -> Callable[..., Iterable[bytes]]:
    """moto's WSGI app with the fixes above applied."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    apply_sqs_fixes()
    apply_kms_fixes()
    apply_server_fixes()
    return AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))

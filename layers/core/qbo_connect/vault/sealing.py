"""Envelope encryption of tokens: a KMS data key per connection, AES-256-GCM per field.

Why envelope encryption and not KMS Encrypt per token: a warm ``get_token`` must not call KMS.
Each connection item stores its data key wrapped by ``TokenKey`` (with the realm as KMS
encryption context, so a wrapped key copied to another realm's item does not decrypt there);
the unwrapped key is cached per container, so only the first read of a realm in a container
pays one ``kms:Decrypt``. Each token field is sealed with AES-GCM under that key with the
realm and the field name as associated data, so ciphertexts cannot be swapped between fields
or items unnoticed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.bindings._rust import openssl as rust_openssl

from qbo_connect.errors import DecryptionError
from qbo_connect.store.connections import SealedTokens
from qbo_connect.vault.records import ACCESS_FIELD, REFRESH_FIELD

if TYPE_CHECKING:
    from qbo_connect.intuit import TokenSet

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12

# The class ``cryptography.hazmat.primitives.ciphers.aead.AESGCM`` is an alias of. Importing that
# module imports the whole ``ciphers`` package first (block ciphers, modes, the decrepit
# algorithms), about 3 ms of every cold start that uses none of it; tests/unit/test_cold_start.py
# fails if the two ever differ.
AESGCM = rust_openssl.aead.AESGCM


class TokenCipher:
    """Seals and opens token fields for one table; caches unwrapped data keys per container."""

    def __init__(self, kms_client: Any, key_id: str, *, cache_size: int = 4096) -> None:
        self._kms = kms_client
        self._key_id = key_id
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.kms_calls = 0  # observable by tests and the benchmark

    @staticmethod
    def _context(realm_id: str) -> dict[str, str]:
        return {"realm_id": realm_id, "purpose": "qbo-connect-tokens"}

    def new_data_key(self, realm_id: str) -> bytes:
        """Create a data key for a realm and return it wrapped (what the item stores)."""
        response = self._kms.generate_data_key(
            KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=self._context(realm_id)
        )
        self.kms_calls += 1
        wrapped: bytes = response["CiphertextBlob"]
        self._remember(realm_id, wrapped, response["Plaintext"])
        return wrapped

    def _cache_key(self, realm_id: str, wrapped: bytes) -> bytes:
        return hashlib.sha256(realm_id.encode() + b"\x00" + wrapped).digest()

    def _remember(self, realm_id: str, wrapped: bytes, plaintext: bytes) -> None:
        with self._lock:
            self._cache[self._cache_key(realm_id, wrapped)] = plaintext
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _data_key(self, realm_id: str, wrapped: bytes) -> bytes:
        cache_key = self._cache_key(realm_id, wrapped)
        with self._lock:
            plaintext = self._cache.get(cache_key)
            if plaintext is not None:
                self._cache.move_to_end(cache_key)
                return plaintext
        try:
            response = self._kms.decrypt(
                CiphertextBlob=wrapped,
                KeyId=self._key_id,
                EncryptionContext=self._context(realm_id),
            )
        except self._kms.exceptions.InvalidCiphertextException:
            raise DecryptionError("data key does not belong to this realm") from None
        self.kms_calls += 1
        plaintext = response["Plaintext"]
        self._remember(realm_id, wrapped, plaintext)
        return plaintext

    @staticmethod
    def _aad(realm_id: str, field_name: str) -> bytes:
        return f"qbo-connect|{realm_id}|{field_name}".encode()

    def seal(self, realm_id: str, wrapped_key: bytes, field_name: str, value: str) -> bytes:
        key = self._data_key(realm_id, wrapped_key)
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, value.encode(), self._aad(realm_id, field_name))
        return FORMAT_VERSION + nonce + sealed

    def open(self, realm_id: str, wrapped_key: bytes, field_name: str, blob: bytes) -> str:
        if not blob or blob[:1] != FORMAT_VERSION:
            raise DecryptionError(f"{field_name}: unknown ciphertext format")
        key = self._data_key(realm_id, wrapped_key)
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return AESGCM(key).decrypt(nonce, sealed, self._aad(realm_id, field_name)).decode()
        except InvalidTag:
            raise DecryptionError(f"{field_name}: ciphertext does not open") from None


def seal_tokens(
    cipher: TokenCipher,
    realm_id: str,
    tokens: TokenSet,
    *,
    data_key: bytes | None = None,
    previous_refresh_token_enc: bytes | None = None,
    keep_access_token: bool = True,
) -> SealedTokens:
    """Encrypt a token set for storage, reusing the connection's data key when it has one.

    ``keep_access_token=False`` leaves the access token out (see the protocol's
    ``_keeps_access_token``).
    """
    wrapped = data_key or cipher.new_data_key(realm_id)
    return SealedTokens(
        data_key=wrapped,
        access_token_enc=(
            cipher.seal(realm_id, wrapped, ACCESS_FIELD, tokens.access_token)
            if keep_access_token
            else None
        ),
        refresh_token_enc=cipher.seal(realm_id, wrapped, REFRESH_FIELD, tokens.refresh_token),
        access_expires_at=tokens.access_expires_at if keep_access_token else 0.0,
        refresh_expires_at=tokens.refresh_expires_at,
        refresh_hard_expires_at=tokens.refresh_hard_expires_at,
        previous_refresh_token_enc=previous_refresh_token_enc,
    )

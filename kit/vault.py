"""The secret vault: symmetric encryption of secrets at rest, with key rotation.

Keys are Fernet keys (url-safe base64 of 32 bytes) from `VAULT_KEYS`. The first
key encrypts; every key decrypts, so a new key is put first, stored secrets are
re-encrypted (`switchboard rotate-vault-key`), and only then is the old key
removed. A leaf module: it imports nothing from the rest of the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class VaultError(Exception):
    """A stored secret could not be decrypted with any configured key (or is not a token).

    The message never contains the ciphertext or the plaintext.
    """


def check_key(key: str) -> None:
    """Raise ValueError (without echoing the key) unless `key` is a valid Fernet key."""
    try:
        Fernet(key.encode() if isinstance(key, str) else key)
    except (ValueError, TypeError):
        raise ValueError(
            "each key must be a Fernet key: url-safe base64 of 32 bytes "
            "(generate one with `switchboard generate-vault-key`)"
        ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()


class Vault:
    """Encrypt with the newest key, decrypt with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("the vault needs at least one key")
        for key in keys:
            check_key(key)
        self._fernets = [Fernet(k.encode()) for k in keys]
        self._multi = MultiFernet(self._fernets)

    def encrypt(self, plaintext: str | bytes) -> str:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        return self._multi.encrypt(data).decode()

    def decrypt_bytes(self, token: str) -> bytes:
        try:
            return self._multi.decrypt(token.encode())
        except (InvalidToken, ValueError, TypeError):
            raise VaultError(
                "a stored secret cannot be decrypted with any key in VAULT_KEYS"
            ) from None

    def decrypt(self, token: str) -> str:
        return self.decrypt_bytes(token).decode()

    def is_current(self, token: str) -> bool:
        """True when `token` is already encrypted under the newest key."""
        try:
            self._fernets[0].decrypt(token.encode())
        except (InvalidToken, ValueError, TypeError):
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same secret re-encrypted under the newest key."""
        try:
            return self._multi.rotate(token.encode()).decode()
        except (InvalidToken, ValueError, TypeError):
            raise VaultError(
                "a stored secret cannot be decrypted with any key in VAULT_KEYS"
            ) from None


@lru_cache(maxsize=8)
def _vault(keys: tuple[str, ...]) -> Vault:
    return Vault(keys)


def vault_for(keys: Sequence[str]) -> Vault:
    """A Vault for these keys, built once per distinct key list."""
    return _vault(tuple(keys))

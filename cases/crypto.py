"""Encryption at rest of the original PHI: MultiFernet over the configured keys, newest first."""

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class PhiDecryptionError(Exception):
    """The stored token cannot be read with any configured key."""


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def phi_cipher() -> MultiFernet:
    return _cipher(tuple(settings.MEDPORTAL_FERNET_KEYS))


def encrypt_phi(payload: dict) -> str:
    return phi_cipher().encrypt(json.dumps(payload, ensure_ascii=False).encode()).decode()


def decrypt_phi(token: str) -> dict:
    try:
        return json.loads(phi_cipher().decrypt(token.encode()))
    except InvalidToken:
        raise PhiDecryptionError(
            "The original identifiers cannot be decrypted with the configured keys "
            "(was a key removed from MEDPORTAL_FERNET_KEYS before rotate_keys ran?)."
        ) from None


def rotate_token(token: str) -> str:
    """Re-encrypt under the newest key; old keys keep decrypting until they are removed."""
    try:
        return phi_cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise PhiDecryptionError("A stored token cannot be decrypted with the configured keys.") from None

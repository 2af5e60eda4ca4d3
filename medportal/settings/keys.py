"""Validation of key material, and the demo's generated local secrets file."""

import base64
import json
import os
import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured


def validated_fernet_keys(keys: list[str], *, source: str) -> list[str]:
    if not keys:
        raise ImproperlyConfigured(f"{source}: at least one Fernet key is required.")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{source}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)."
            ) from None
    return keys


def validated_pseudonym_key(key: str, *, source: str) -> str:
    if len(key) < 32:
        raise ImproperlyConfigured(f"{source}: the pseudonym key must be at least 32 characters.")
    return key


def local_demo_secrets(path: Path) -> dict:
    """Secrets for the embedded demo, generated once into an ignored file (never for production)."""
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    generated = {
        "secret_key": secrets.token_urlsafe(50),
        "fernet_keys": [Fernet.generate_key().decode()],
        "pseudonym_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    path.write_text(json.dumps(generated, indent=2))
    path.chmod(0o600)
    print(
        f"WARNING: generated demo secrets and encryption keys in {path}. They protect the demo data; "
        "production takes DJANGO_SECRET_KEY, MEDPORTAL_FERNET_KEYS and MEDPORTAL_PSEUDONYM_KEY "
        "from the environment instead.",
        file=sys.stderr,
    )
    return generated

"""The embedded default that `make run` uses: SQLite, the filesystem broker, local demo secrets."""

import os

from .base import *  # noqa: F403
from .base import DATA_DIR, LOG_DIR, LOGGING, STATIC_ROOT, log_to_file
from .keys import local_demo_secrets, validated_fernet_keys, validated_pseudonym_key

DEBUG = True

_demo = local_demo_secrets(DATA_DIR / "secrets.json")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _demo["secret_key"]
MEDPORTAL_FERNET_KEYS = validated_fernet_keys(
    [k.strip() for k in os.environ.get("MEDPORTAL_FERNET_KEYS", "").split(",") if k.strip()]
    or _demo["fernet_keys"],
    source="MEDPORTAL_FERNET_KEYS",
)
MEDPORTAL_PSEUDONYM_KEY = validated_pseudonym_key(
    os.environ.get("MEDPORTAL_PSEUDONYM_KEY") or _demo["pseudonym_key"], source="MEDPORTAL_PSEUDONYM_KEY"
)
LOGGING = log_to_file(LOGGING, LOG_DIR)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise serves from here after collectstatic

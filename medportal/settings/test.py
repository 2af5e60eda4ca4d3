"""Settings for the test suite: real PostgreSQL and Redis when DATABASE_URL / CELERY_BROKER_URL say so."""

import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import LOGGING, log_to_file

DEBUG = False
SECRET_KEY = "test-only-secret-key-not-for-any-deployment-0123456789"
# Everything the app writes during tests goes here; the PHI canary test scans it.
DATA_DIR = Path(tempfile.mkdtemp(prefix="medportal-test-"))
LOG_DIR = DATA_DIR / "log"
MEDPORTAL_TRAINING_DIR = DATA_DIR / "training"
LOGGING = log_to_file(LOGGING, LOG_DIR)
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Two fixed test keys (newest first) so rotation is exercised with real key material.
MEDPORTAL_FERNET_KEYS = ["hX5mFMwmJbKHqRRE2l4y4pI5lkQmbm07lAwEvJ3JmZg="]
MEDPORTAL_PSEUDONYM_KEY = "test-pseudonym-key-0123456789abcdef0123456789"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = []
# Tests read English messages unless they switch language themselves (tests/test_i18n.py does).
LANGUAGE_CODE = "en"

"""Production settings: secrets from the environment only, and `check --deploy` clean."""

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "medportal.settings.production",
    "DJANGO_SECRET_KEY": "q7#v!x2@production-secret-" + "k" * 40,
    "DJANGO_ALLOWED_HOSTS": "medportal.hospital.example",
    "MEDPORTAL_FERNET_KEYS": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
    "MEDPORTAL_PSEUDONYM_KEY": "p" * 48,
    "DATABASE_URL": "sqlite:///:memory:",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MEDPORTAL_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
        timeout=120,
    )


def test_production_passes_the_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "Set the environment variable DJANGO_SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_encryption_keys():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "MEDPORTAL_FERNET_KEYS"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "MEDPORTAL_FERNET_KEYS" in result.stderr


def test_a_malformed_encryption_key_is_named():
    result = manage("check", env={**PRODUCTION_ENV, "MEDPORTAL_FERNET_KEYS": f"{Fernet.generate_key().decode()},nope"})
    assert result.returncode != 0
    assert "key 2 is not a Fernet key" in result.stderr


def test_a_bad_typed_value_fails_loudly():
    result = manage("check", env={**PRODUCTION_ENV, "MEDPORTAL_SESSION_IDLE_MINUTES": "soon"})
    assert result.returncode != 0
    assert "MEDPORTAL_SESSION_IDLE_MINUTES must be a whole number" in result.stderr


def test_the_embedded_sqlite_database_takes_write_locks_up_front(tmp_path):
    # The web process and the worker share the file; a deferred transaction that later writes fails with
    # "database is locked" instead of waiting.
    env = {"DJANGO_SETTINGS_MODULE": "medportal.settings.dev", "MEDPORTAL_DATA_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = manage("shell", "-c", "from django.db import connection; c = connection.cursor(); "
                    "print(connection.settings_dict['OPTIONS']['transaction_mode'], "
                    "c.execute('PRAGMA journal_mode').fetchone()[0])", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["IMMEDIATE", "wal"]

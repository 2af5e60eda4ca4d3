"""Personas and browser set-up shared by the suite."""

import os
from importlib import import_module
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from cases import roles
from tests.tiny_models import lora_adapter_dir, tiny_model_dir, training_jsonl  # noqa: F401 (fixtures shared by the suite)

# pytest-django's live_server and Playwright's sync API share the main thread.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

PASSWORD = "a-long-test-password"


def make_user(django_user_model, username: str, role: str | None, *, staff: bool = False):
    user = django_user_model.objects.create_user(username=username, password=PASSWORD, is_staff=staff)
    if role:
        if not Group.objects.filter(name=role).exists():
            # A transactional test (the browser tests) flushed what the data migration made.
            import_module("cases.migrations.0002_roles").create_roles(django_apps, None)
            import_module("modeling.migrations.0002_ml_admin_permissions").grant(django_apps, None)
            import_module("cases.migrations.0004_case_sets").grant(django_apps, None)
            import_module("modeling.migrations.0003_trainingrun").grant(django_apps, None)
            import_module("evaluation.migrations.0002_default_rubric_and_roles").grant(django_apps, None)
            import_module("evaluation.migrations.0004_evaluation_run_permissions").grant(django_apps, None)
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def doctor(django_user_model):
    return make_user(django_user_model, "dr_owner", roles.DOCTOR)


@pytest.fixture
def other_doctor(django_user_model):
    return make_user(django_user_model, "dr_colleague", roles.DOCTOR)


@pytest.fixture
def reviewer(django_user_model):
    return make_user(django_user_model, "rater", roles.REVIEWER)


@pytest.fixture
def auditor(django_user_model):
    return make_user(django_user_model, "auditor", roles.AUDITOR, staff=True)


@pytest.fixture
def ml_admin(django_user_model):
    return make_user(django_user_model, "ml_admin", roles.ML_ADMIN, staff=True)


@pytest.fixture
def api_client():
    return APIClient()


def celery_worker_on(queue: str, *, purge: bool = True, shutdown_timeout: float = 30, **options):
    """A real Celery worker (in a thread, one task at a time like production's) consuming one queue of the test broker.

    ``purge`` drops what a previous test left on the broker; a test that queued its own tasks before starting the
    worker passes False.
    """
    from celery.contrib.testing.worker import start_worker

    from medportal.celery import app

    if purge:
        app.control.purge()
    return start_worker(app, pool="solo", perform_ping_check=False, queues=[queue], shutdown_timeout=shutdown_timeout,
                        **options)


@pytest.fixture
def worker():
    with celery_worker_on("inference"):
        yield


@pytest.fixture
def training_worker():
    with celery_worker_on("training", shutdown_timeout=60) as started:
        yield started


@pytest.fixture
def training_dir(settings, tmp_path) -> Path:
    """Each test's training runs and exported data in a folder of its own."""
    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"
    return settings.MEDPORTAL_TRAINING_DIR


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
        ],
    }

"""The Celery application. Task modules live in the apps and are autodiscovered."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings.dev")

app = Celery("medportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

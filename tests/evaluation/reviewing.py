"""Personas and finished analyses for the review tests: a doctor's case answered by a named model version."""

from importlib import import_module

import pytest
from django.utils import timezone

from cases import roles
from cases.models import Analysis
from cases.services import CaseInput, case_create
from evaluation.models import Rubric
from evaluation.services import OVERALL, ReviewInput
from modeling.models import ModelVersion
from tests.conftest import make_user

VERSION_NAME = "secret-version-name-v7"


@pytest.fixture
def reviewers(django_user_model):
    return [make_user(django_user_model, f"rater{i}", roles.REVIEWER) for i in range(1, 4)]


@pytest.fixture
def version():
    return ModelVersion.objects.create(name=VERSION_NAME, base_model="/models/not-loaded-in-these-tests")


@pytest.fixture
def rubric():
    if not Rubric.objects.exists():
        # A transactional test flushed what the data migration seeded.
        from django.apps import apps

        import_module("evaluation.migrations.0002_default_rubric_and_roles").seed(apps, None)
    return Rubric.objects.get(name="default", is_current=True)


def finished_analysis(author, version, *, text="患者李明，男，胸痛2小时，向左肩放射。", diagnosis="急性心肌梗死") -> Analysis:
    """A doctor's case with an analysis the worker has finished (its answer written as the worker writes it)."""
    case = case_create(author=author, data=CaseInput(texts={"chief_complaint": text}))
    return Analysis.objects.create(
        case=case, model_version=version, requested_by=author, status=Analysis.Status.DONE, diagnosis=diagnosis,
        differential=[{"name": diagnosis, "probability": 0.7}, {"name": "心绞痛", "probability": 0.3}],
        treatment="阿司匹林，急诊PCI。", prognosis="及时再灌注预后较好。", rationale="胸痛放射至左肩。",
        started_at=timezone.now(), finished_at=timezone.now(),
    )


def full_scores(rubric: Rubric, value: int = 4, labels=("A",)) -> dict:
    keys = [d.key for d in rubric.dimensions.all()] + [OVERALL]
    return {label: {key: value for key in keys} for label in labels}


def complete_input(rubric: Rubric, value: int = 4, labels=("A",), **extra) -> ReviewInput:
    return ReviewInput(ratings=full_scores(rubric, value, labels), **extra)

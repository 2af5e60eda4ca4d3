import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from modeling.models import ModelVersion
from modeling.selectors import model_version_active
from modeling.services import (
    model_version_activate,
    model_version_register,
    model_version_retire,
    model_version_rollback,
)

pytestmark = pytest.mark.django_db


def test_activating_a_version_makes_the_previous_one_a_candidate_that_a_rollback_brings_back(ml_admin):
    first = model_version_register(name="v1", base_model="/models/a", activate=True, created_by=ml_admin)
    second = model_version_register(name="v2", base_model="/models/b", created_by=ml_admin)
    assert model_version_active() == first
    model_version_activate(version=second, actor=ml_admin)
    first.refresh_from_db()
    assert model_version_active() == second
    assert first.status == ModelVersion.Status.CANDIDATE  # still selectable for re-runs until retired
    second.refresh_from_db()
    assert second.previous == first and second.activated_at

    assert model_version_rollback(actor=ml_admin) == first
    second.refresh_from_db()
    assert model_version_active() == first and second.status == ModelVersion.Status.CANDIDATE


def test_a_retired_version_cannot_be_activated_and_the_active_one_cannot_be_retired(ml_admin):
    first = model_version_register(name="v1", base_model="/models/a", activate=True)
    second = model_version_register(name="v2", base_model="/models/b")
    with pytest.raises(ValidationError, match="active version"):
        model_version_retire(version=first, actor=ml_admin)
    model_version_retire(version=second, actor=ml_admin)
    with pytest.raises(ValidationError, match="retired"):
        model_version_activate(version=second, actor=ml_admin)
    with pytest.raises(ValidationError, match="no earlier active version"):
        model_version_rollback(actor=ml_admin)


def test_the_database_allows_only_one_active_version():
    ModelVersion.objects.create(name="v1", base_model="a", status=ModelVersion.Status.ACTIVE)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(name="v2", base_model="b", status=ModelVersion.Status.ACTIVE)


def test_only_ml_admins_reach_model_administration(client, ml_admin, auditor, doctor):
    url = reverse("admin:modeling_modelversion_changelist")
    client.force_login(ml_admin)
    assert client.get(url).status_code == 200
    client.force_login(auditor)
    assert client.get(url).status_code == 403
    client.force_login(doctor)
    assert client.get(url).status_code == 302

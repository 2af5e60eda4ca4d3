import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from modeling.models import ModelVersion
from modeling.selectors import model_version_active
from modeling.services import model_version_activate, model_version_register

pytestmark = pytest.mark.django_db


def test_activating_a_version_retires_the_previous_one(ml_admin):
    first = model_version_register(name="v1", base_model="/models/a", activate=True, created_by=ml_admin)
    second = model_version_register(name="v2", base_model="/models/b", created_by=ml_admin)
    assert model_version_active() == first
    model_version_activate(version=second, actor=ml_admin)
    first.refresh_from_db()
    assert model_version_active() == second
    assert first.status == ModelVersion.Status.RETIRED


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


def test_an_ml_admin_activates_a_version_from_the_admin(client, ml_admin):
    model_version_register(name="v1", base_model="a", activate=True)
    second = model_version_register(name="v2", base_model="b")
    client.force_login(ml_admin)
    response = client.post(
        reverse("admin:modeling_modelversion_changelist"), {"action": "activate", "_selected_action": [second.pk]}
    )
    assert response.status_code == 302
    assert model_version_active() == second

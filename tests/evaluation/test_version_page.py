"""The version page an ML admin trusts: its evaluation runs and lineage, activation confirmed on the metric difference
against the active version, rollback in one confirmed action, retirement, all audited, and only for ML admins."""

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from cases.services import case_set_import
from evaluation.services import evaluation_run_create, evaluation_run_execute
from modeling.models import ModelVersion
from modeling.selectors import model_version_active
from modeling.services import model_version_register
from tests.tiny_models import case_records, write_jsonl

pytestmark = pytest.mark.django_db
LABELS = ["心绞痛", "支气管炎", "流感", "angina", "bronchitis", "influenza"]


@pytest.fixture
def versions(tiny_model_dir, lora_adapter_dir):
    active = model_version_register(name="tiny-base", base_model=str(tiny_model_dir), label_set=LABELS, activate=True)
    candidate = model_version_register(name="tiny-lora", base_model=str(tiny_model_dir), adapter=str(lora_adapter_dir),
                                       label_set=LABELS)
    return active, candidate


def evaluated(version, case_set, user):
    run = evaluation_run_create(version=version, case_set=case_set, started_by=user, max_new_tokens=8, enqueue=False)
    evaluation_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_activation_is_confirmed_on_the_difference_against_the_active_version(client, ml_admin, versions, tmp_path):
    active, candidate = versions
    case_set = case_set_import(path=write_jsonl(case_records(8), tmp_path / "c.jsonl"), case_set="common",
                               actor=ml_admin).case_set
    before, after = evaluated(active, case_set, ml_admin), evaluated(candidate, case_set, ml_admin)
    client.force_login(ml_admin)

    page = client.get(reverse("admin:modeling_modelversion_change", args=[candidate.pk])).content.decode()
    assert 'data-testid="activate-version"' in page and 'data-testid="version-runs"' in page
    assert f"#{after.pk}" in page and 'data-testid="lineage"' in page

    confirm = client.get(reverse("admin:modeling_modelversion_activate", args=[candidate.pk])).content.decode()
    assert 'data-testid="activation-comparison"' in confirm
    difference = after.metrics["overall"]["accuracy"]["value"] - before.metrics["overall"]["accuracy"]["value"]
    assert f"{difference:.3f}" in confirm and "McNemar" in confirm
    assert model_version_active() == active  # looking is not activating

    response = client.post(reverse("admin:modeling_modelversion_activate", args=[candidate.pk]))
    assert response.status_code == 302
    assert model_version_active() == candidate
    active.refresh_from_db()
    assert active.status == ModelVersion.Status.CANDIDATE  # still selectable for re-runs until retired
    entry = LogEntry.objects.get_for_object(candidate).order_by("-timestamp").first()
    assert entry.actor == ml_admin and entry.changes_dict["status"] == ["candidate", "active"]


def test_without_a_common_evaluation_the_confirmation_says_so(client, ml_admin, versions):
    _, candidate = versions
    client.force_login(ml_admin)
    confirm = client.get(reverse("admin:modeling_modelversion_activate", args=[candidate.pk])).content.decode()
    assert 'data-testid="no-comparison"' in confirm and 'data-testid="confirm-activation"' in confirm


def test_rollback_is_one_confirmed_action(client, ml_admin, versions):
    active, candidate = versions
    client.force_login(ml_admin)
    client.post(reverse("admin:modeling_modelversion_activate", args=[candidate.pk]))
    page = client.get(reverse("admin:modeling_modelversion_change", args=[candidate.pk])).content.decode()
    assert 'data-testid="rollback-version"' in page and "Roll back to tiny-base" in page
    assert "tiny-base" in client.get(reverse("admin:modeling_modelversion_rollback")).content.decode()
    client.post(reverse("admin:modeling_modelversion_rollback"))
    assert model_version_active() == active
    # Nothing before tiny-base: a second rollback is refused with the reason, nothing changes.
    response = client.post(reverse("admin:modeling_modelversion_rollback"), follow=True)
    assert "no earlier active version" in response.content.decode()
    assert model_version_active() == active


def test_a_retired_version_is_offered_neither_for_activation_nor_for_evaluation(client, ml_admin, versions, tmp_path):
    active, candidate = versions
    client.force_login(ml_admin)
    client.post(reverse("admin:modeling_modelversion_changelist"), {"action": "retire", "_selected_action": [candidate.pk]})
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.RETIRED
    page = client.get(reverse("admin:modeling_modelversion_change", args=[candidate.pk])).content.decode()
    assert 'data-testid="activate-version"' not in page
    client.post(reverse("admin:modeling_modelversion_activate", args=[candidate.pk]))
    assert model_version_active() == active
    # The active version is never retired.
    response = client.post(reverse("admin:modeling_modelversion_changelist"),
                           {"action": "retire", "_selected_action": [active.pk]}, follow=True)
    assert "activate another one before retiring it" in response.content.decode()
    active.refresh_from_db()
    assert active.status == ModelVersion.Status.ACTIVE


@pytest.mark.parametrize("role", ["doctor", "reviewer", "auditor"])
def test_only_ml_admins_activate_or_roll_back(client, request, role, versions):
    active, candidate = versions
    client.force_login(request.getfixturevalue(role))
    for method, url in (("get", reverse("admin:modeling_modelversion_activate", args=[candidate.pk])),
                        ("post", reverse("admin:modeling_modelversion_activate", args=[candidate.pk])),
                        ("post", reverse("admin:modeling_modelversion_rollback")),
                        ("get", reverse("admin:modeling_modelversion_change", args=[candidate.pk]))):
        response = getattr(client, method)(url)
        assert response.status_code in (302, 403), url
        if response.status_code == 302:
            assert "/login/" in response["Location"]
    assert model_version_active() == active

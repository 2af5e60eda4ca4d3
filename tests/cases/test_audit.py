import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from cases.models import AccessEvent, Case
from tests.cases.phi_examples import ZH_CASE, ZH_ID, ZH_NAME

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(client, doctor):
    client.force_login(doctor)
    client.post(reverse("cases:create"), ZH_CASE, REMOTE_ADDR="10.1.2.3")
    return Case.objects.get()


def test_creating_a_case_is_logged_with_the_actor_and_masked_originals(case, doctor):
    entry = LogEntry.objects.get_for_object(case).get()
    assert entry.action == LogEntry.Action.CREATE
    assert entry.actor == doctor
    assert entry.remote_addr == "10.1.2.3"
    masked = entry.changes_dict["phi_ciphertext"][1]
    assert masked != case.phi_ciphertext and "*" in masked


def test_a_case_created_through_the_api_names_its_actor(api_client, doctor):
    from rest_framework.authtoken.models import Token

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=doctor).key}")
    created = api_client.post("/api/v1/cases/", {"chief_complaint": "发热"}, format="json").json()
    assert LogEntry.objects.get_for_object(Case.objects.get(pk=created["id"])).get().actor == doctor


def test_viewing_listing_and_revealing_leave_access_entries(client, doctor, case):
    client.get(reverse("cases:list"))
    client.get(reverse("cases:detail", args=[case.pk]))
    client.post(reverse("cases:reveal", args=[case.pk]))
    entries = list(AccessEvent.objects.order_by("at", "id").values_list("action", "case_ids", "actor"))
    assert entries == [
        (AccessEvent.Action.CASE_LIST, [case.pk], doctor.pk),
        (AccessEvent.Action.CASE_VIEW, [case.pk], doctor.pk),
        (AccessEvent.Action.PHI_REVEAL, [case.pk], doctor.pk),
    ]


def test_api_reads_leave_access_entries(api_client, doctor, case):
    api_client.force_authenticate(doctor)
    api_client.get("/api/v1/cases/")
    api_client.get(f"/api/v1/cases/{case.pk}/")
    actions = list(AccessEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == [AccessEvent.Action.API_CASE_LIST, AccessEvent.Action.API_CASE_READ]


def test_a_refused_read_reveals_nothing_and_logs_no_reveal(client, other_doctor, case):
    client.force_login(other_doctor)
    assert client.post(reverse("cases:reveal", args=[case.pk])).status_code == 404
    assert not AccessEvent.objects.filter(action=AccessEvent.Action.PHI_REVEAL).exists()


def test_the_auditor_sees_the_trail_without_phi(client, doctor, auditor, case):
    client.post(reverse("cases:reveal", args=[case.pk]))
    client.force_login(auditor)
    page = client.get(reverse("audit:log")).content.decode()
    assert "Revealed original identifiers" in page
    assert doctor.username in page
    assert ZH_NAME not in page and ZH_ID not in page
    filtered = client.get(reverse("audit:log"), {"action": "phi_reveal"}).content.decode()
    assert "Viewed a case" not in filtered.split("Case set exports")[0].split("</select>")[1]


def test_the_auditor_reads_access_entries_in_the_admin_without_phi(client, auditor, case):
    client.get(reverse("cases:detail", args=[case.pk]))
    client.force_login(auditor)
    page = client.get(reverse("admin:cases_accessevent_changelist")).content.decode()
    assert "dr_owner" in page
    assert ZH_NAME not in page
    assert client.get(reverse("admin:auditlog_logentry_changelist")).status_code == 200


def test_the_auditor_sees_exports_training_runs_and_promotions_in_one_trail(client, auditor, ml_admin, tmp_path,
                                                                            tiny_model_dir, training_jsonl):
    from cases.services import case_set_export, case_set_import
    from modeling.services import model_version_activate, model_version_register, training_run_create

    case_set = case_set_import(path=training_jsonl, case_set="ward-3", actor=ml_admin).case_set
    case_set_export(case_set=case_set, path=tmp_path / "ward-3.jsonl", actor=ml_admin)
    version = model_version_register(name="tiny-v2", base_model=str(tiny_model_dir), created_by=ml_admin)
    model_version_activate(version=version, actor=ml_admin)
    training_run_create(kind="sft", dataset="ward-3", train_file=str(tmp_path / "ward-3.jsonl"), base_version=version,
                        parameters={"max_steps": 2}, started_by=ml_admin)  # queued: no worker in this test

    client.force_login(auditor)
    page = client.get(reverse("audit:log")).content.decode()
    exports = page.split('data-testid="case-set-exports"')[1].split("</table>")[0]
    assert "ward-3" in exports and ml_admin.username in exports and ">80<" in exports
    changes = page.split('data-testid="case-changes"')[1].split("</table>")[0]
    assert "Model version" in changes and "tiny-v2" in changes and "Training run" in changes and "Case set" in changes
    assert "Complaint:" not in page and "主诉" not in page  # the exported cases' text is not on the auditor's page

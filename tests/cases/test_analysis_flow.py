"""Case analysis end to end: the page or API queues it, a real Celery worker runs the tiny model."""

import time

import pytest
from django.urls import reverse

from cases.models import Analysis, Case
from modeling.models import ModelVersion
from modeling.services import model_version_register

pytestmark = pytest.mark.django_db(transaction=True)
LABELS = ["心绞痛", "支气管炎", "流感", "angina", "bronchitis", "influenza"]


@pytest.fixture
def active_version(tiny_model_dir):
    return model_version_register(name="tiny-test", base_model=str(tiny_model_dir), label_set=LABELS, activate=True)


def wait_for(analysis: Analysis, seconds: float = 90) -> Analysis:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        analysis.refresh_from_db()
        if analysis.is_finished:
            return analysis
        time.sleep(0.2)
    raise AssertionError(f"analysis still {analysis.status} after {seconds} s")


def test_a_submitted_case_is_analysed_by_the_worker(client, doctor, active_version, worker):
    client.force_login(doctor)
    client.post(reverse("cases:create"), {"chief_complaint": "患者胸痛2小时。", "present_illness": "活动后加重。"})
    analysis = wait_for(Case.objects.get().analyses.get())
    assert analysis.status == Analysis.Status.DONE, analysis.error
    assert analysis.diagnosis
    assert analysis.model_version == active_version
    probabilities = [item["probability"] for item in analysis.differential]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
    # The checks around the model ran: every section judged, and the headline checked against the ranking.
    assert set(analysis.quality) == {"diagnosis", "treatment", "prognosis", "rationale"}
    assert analysis.needs_review == analysis.ranking_disagrees
    assert all(claim["status"] in ("supported", "contradicted", "unsupported") for claim in analysis.grounding)
    # Chinese case: ranked among the Chinese labels only.
    assert {item["name"] for item in analysis.differential} == {"心绞痛", "支气管炎", "流感"}
    page = client.get(reverse("cases:analysis", args=[analysis.pk])).content.decode()
    assert analysis.disclaimer in page
    assert "hx-get" not in page  # finished: the panel stops polling


def test_a_broken_model_path_fails_the_analysis_and_keeps_the_case(client, doctor, worker):
    model_version_register(name="broken", base_model="/nonexistent/model", label_set=LABELS, activate=True)
    client.force_login(doctor)
    client.post(reverse("cases:create"), {"chief_complaint": "Cough for 3 days."})
    case = Case.objects.get()
    analysis = wait_for(case.analyses.get())
    assert analysis.status == Analysis.Status.FAILED
    assert "model files missing at /nonexistent/model" in analysis.error
    case.refresh_from_db()
    assert case.chief_complaint == "Cough for 3 days."
    page = client.get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert "model files missing at /nonexistent/model" in page


def test_the_api_answers_with_wait_and_queues_without(api_client, doctor, active_version, worker):
    api_client.force_authenticate(doctor)
    queued = api_client.post("/api/v1/analyze/", {"text": "Fever and cough for 3 days.", "max_new_tokens": 32}, format="json")
    assert queued.status_code == 202
    assert queued.json()["status"] == "queued"
    answered = api_client.post(
        "/api/v1/analyze/", {"text": "Headache for 2 days.", "max_new_tokens": 32, "wait": True}, format="json"
    )
    assert answered.status_code == 200
    body = answered.json()
    assert body["status"] == "done" and body["diagnosis"]
    assert body["disclaimer"]
    assert api_client.get(queued.json()["url"]).status_code == 200


def test_a_done_analysis_is_not_redone(doctor, active_version, worker):
    from cases.services import CaseInput, analysis_run, case_submit

    _case, analysis = case_submit(author=doctor, data=CaseInput(texts={"chief_complaint": "发热1天"}))
    analysis = wait_for(analysis)
    finished_at = analysis.finished_at
    analysis_run(analysis_id=analysis.pk)
    analysis.refresh_from_db()
    assert analysis.finished_at == finished_at


def running_analysis(doctor, *, started_minutes_ago: float) -> Analysis:
    """An analysis that a worker marked running and then (perhaps) died on."""
    from datetime import timedelta

    from django.utils import timezone

    from cases.services import CaseInput, case_create

    case = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "咳嗽3天"}))
    analysis = Analysis.objects.create(case=case, model_version=ModelVersion.objects.get(status="active"), requested_by=doctor,
                                       max_new_tokens=64, status=Analysis.Status.RUNNING,
                                       started_at=timezone.now() - timedelta(minutes=started_minutes_ago))
    return analysis


def test_an_analysis_whose_worker_died_is_run_again_when_its_task_comes_back(doctor, active_version):
    from cases.services import analysis_run

    abandoned = running_analysis(doctor, started_minutes_ago=20)  # longer than MEDPORTAL_ANALYSIS_STALE_SECONDS
    analysis_run(analysis_id=abandoned.pk)  # the broker redelivers an unacknowledged task to a new worker
    abandoned.refresh_from_db()
    assert abandoned.status == Analysis.Status.DONE and abandoned.diagnosis


def test_a_running_analysis_is_left_to_its_worker_unless_the_task_is_a_retry(doctor, active_version):
    from cases.services import analysis_run

    live = running_analysis(doctor, started_minutes_ago=0)
    analysis_run(analysis_id=live.pk)  # a duplicate delivery while the first attempt is still working
    live.refresh_from_db()
    assert live.status == Analysis.Status.RUNNING

    analysis_run(analysis_id=live.pk, reclaim=True)  # the task's own retry: the first attempt is over
    live.refresh_from_db()
    assert live.status == Analysis.Status.DONE


def test_a_doctor_reruns_a_case_with_another_version(client, doctor, active_version, worker, tiny_model_dir):
    other = model_version_register(name="tiny-other", base_model=str(tiny_model_dir), label_set=LABELS)
    client.force_login(doctor)
    client.post(reverse("cases:create"), {"chief_complaint": "咳嗽3天"})
    case = Case.objects.get()
    client.post(reverse("cases:reanalyse", args=[case.pk]), {"model_version": other.pk})
    versions = {wait_for(a).model_version.name for a in case.analyses.all()}
    assert versions == {"tiny-test", "tiny-other"}


def test_the_case_list_shows_the_latest_analysis_status(client, doctor, active_version, worker):
    client.force_login(doctor)
    client.post(reverse("cases:create"), {"chief_complaint": "胸痛2小时"})
    wait_for(Case.objects.get().analyses.get())
    row = client.get(reverse("cases:list")).content.decode().split("<tbody>")[1]
    assert 'class="status done"' in row and "Done" in row


def test_diagnoses_impossible_for_the_patient_are_left_out_of_the_ranking(client, doctor, tiny_model_dir, worker):
    model_version_register(name="tiny-plausible", base_model=str(tiny_model_dir),
                           label_set=["心绞痛", "子痫前期", "异位妊娠", "流感"], activate=True)
    client.force_login(doctor)
    client.post(reverse("cases:create"), {"free_text": "男，23岁，头痛伴血压升高2天。"})
    case = Case.objects.get()
    assert (case.sex, case.age) == ("M", 23)
    analysis = wait_for(case.analyses.get())
    assert analysis.status == Analysis.Status.DONE, analysis.error
    assert {item["name"] for item in analysis.differential} == {"心绞痛", "流感"}
    assert {item["name"] for item in analysis.excluded} == {"子痫前期", "异位妊娠"}
    assert all("育龄女性" in item["reason"] for item in analysis.excluded)
